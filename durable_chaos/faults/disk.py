"""disk-slow: block I/O throttling in the member's own cgroup, on the disk under its data directory; and where a
member's data lives on the host, which disk-full (`disk_full.py`) asks too.

The member's data directory (`Subject.data_paths`) lives on a host filesystem: a Docker volume, or the container's
writable layer. Its block device is the whole disk under that filesystem (throttling takes a disk, not a
partition). The rule goes in the member's own cgroup, found through `/proc/<its pid>/cgroup`: `io.max` where Docker
puts containers in cgroup v2, `blkio.throttle.*_device` where it uses cgroup v1's blkio controller (this CI
machine: Docker's cgroup driver is cgroupfs on v1, and the v2 hierarchy has no io controller). Same kernel
mechanism (blk-throttle), two file formats.

The worker writes the cgroup file itself, as the root of the Docker host: the activities that touch Docker run on
the host that owns the containers (DESIGN: a host is a task queue). A privileged helper container would also work
against a remote daemon, but would be a container with the host's whole cgroup tree mounted read-write, for a
one-line write; where the worker cannot see the member's cgroup, the fault is refused in preflight instead.

The rule is named by nothing but the member's cgroup and the device: a restarted member gets a fresh cgroup
without it (undo then says nothing was in effect), and undo finds it from the container alone.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ByteSize, ConfigDict, Field
from python_on_whales import Container, DockerException

from durable_chaos.contracts import ContainerState
from durable_chaos.faults import cgroups
from durable_chaos.faults.base import Fault, Target
from durable_chaos.faults.cgroups import CannotReach

# The four limits, in the order cgroup v2 writes them; v1 keeps each in a file of its own.
LIMITS = ("rbps", "wbps", "riops", "wiops")
V1_FILES = {"rbps": "blkio.throttle.read_bps_device", "wbps": "blkio.throttle.write_bps_device",
            "riops": "blkio.throttle.read_iops_device", "wiops": "blkio.throttle.write_iops_device"}

Rate = Annotated[ByteSize, Field(ge=4096, le=10 * 1024**3)]
Iops = Annotated[int, Field(ge=1, le=1_000_000)]


class DiskSlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    write_bps: Rate | None = Field(default=ByteSize(1_000_000), description="write cap, bytes/s (1mb, 512kib)")
    read_bps: Rate | None = Field(default=None, description="read cap, bytes/s (none: uncapped)")
    # The byte rate alone barely touches a database's WAL (its fsyncs write a few KiB each: 1 MB/s left etcd's
    # fsync at 0.4 ms here); the operation rate is what a WAL waits on (10/s took etcd's fsync from 0.5 to 500 ms).
    write_iops: Iops | None = Field(default=50, description="write operations per second (none: uncapped)")
    read_iops: Iops | None = Field(default=None, description="read operations per second (none: uncapped)")


@dataclass(frozen=True)
class MemberCgroup:
    """Where a running member's block I/O limits live: its cgroup directory and the hierarchy's version."""

    path: Path
    v2: bool

    def limits(self, device: str | None = None) -> dict[str, dict[str, int]]:
        """device -> {limit: value} for every limit in force (v1: a zero is no rule; v2: `max` is none)."""
        out: dict[str, dict[str, int]] = {}
        if self.v2:
            for line in _read(self.path / "io.max").splitlines():
                dev, *pairs = line.split()
                for key, _, value in (p.partition("=") for p in pairs):
                    if value != "max":
                        out.setdefault(dev, {})[key] = int(value)
        else:
            for key, name in V1_FILES.items():
                for line in _read(self.path / name).splitlines():
                    dev, value = line.split()
                    if int(value):
                        out.setdefault(dev, {})[key] = int(value)
        return {d: v for d, v in out.items() if device is None or d == device}

    def set(self, device: str, limits: dict[str, int | None]) -> None:
        """Put `limits` on `device` (None: no limit on that one)."""
        if self.v2:
            pairs = " ".join(f"{k}={limits.get(k) or 'max'}" for k in LIMITS)
            (self.path / "io.max").write_text(f"{device} {pairs}\n")
        else:
            for key, name in V1_FILES.items():
                (self.path / name).write_text(f"{device} {limits.get(key) or 0}\n")

    def clear(self, device: str) -> None:
        self.set(device, {})

    def add_self(self) -> None:
        """Move the calling process into this cgroup (only the I/O controller's hierarchy in v1)."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")


def _read(path: Path) -> str:
    return cgroups.Cgroup(path.parent, v2=False).read(path.name)


def member_cgroup(pid: int) -> MemberCgroup:
    """The I/O cgroup of process `pid` as this host sees it (v1's blkio hierarchy if bound, else v2's io)."""
    found = cgroups.controller(pid, "blkio", "io.max")
    return MemberCgroup(found.path, found.v2)


def mount_holding(c: Container, data_path: str):
    """The container's deepest volume or bind mount holding `data_path`, or None (its writable layer holds it)."""
    holding = [m for m in c.mounts or [] if (str(m.destination).rstrip("/") or "/") in
               (data_path, *(str(p) for p in Path(data_path).parents))]
    return max(holding, key=lambda m: len(str(m.destination)), default=None)


def host_dir(c: Container, data_path: str) -> tuple[Path, Path]:
    """Where `data_path` inside the container is on the host (under the volume or bind mount holding it, else in
    the container's writable layer, overlay2's upper directory), and a directory on the same filesystem where a
    probe may write a scratch file: the volume itself, or beside the upper directory (never inside a mounted
    overlay's layers, whose changes behind its back overlayfs does not define)."""
    m = mount_holding(c, data_path)
    if m is not None:
        inside = Path(str(m.source)) / os.path.relpath(data_path, str(m.destination))
        return inside, inside
    upper = (c.graph_driver.data or {}).get("UpperDir") if c.graph_driver else None
    if not upper:
        raise CannotReach(f"container {c.name} has no writable layer this runner knows (driver "
                          f"{c.graph_driver.name if c.graph_driver else '?'})")
    return Path(upper) / data_path.lstrip("/"), Path(upper).parent


def whole_disk(path: Path) -> str:
    """MAJ:MIN of the whole disk under the filesystem holding `path` (its nearest existing ancestor): a partition's
    parent, since block throttling takes whole disks only."""
    while not path.exists() and path != path.parent:
        path = path.parent
    dev = path.stat().st_dev
    majmin = f"{os.major(dev)}:{os.minor(dev)}"
    sysfs = Path("/sys/dev/block") / majmin
    if not sysfs.exists():
        raise CannotReach(f"{path} is on device {majmin}, which is no block device (tmpfs, overlay on overlay?)")
    if (sysfs / "partition").exists():
        majmin = (sysfs.resolve().parent / "dev").read_text().strip()
    return majmin


@dataclass(frozen=True)
class Placement:
    cgroup: MemberCgroup
    device: str
    data_dir: Path  # the data directory as the host sees it
    scratch_dir: Path  # where a probe may write, on the same filesystem


def placement(t: Target) -> Placement:
    """Where this member's throttle goes; CannotReach if it has no process now (or we cannot see it)."""
    t.container.reload()
    if not t.container.state.running or not t.container.state.pid:
        raise CannotReach(f"{t.service} is not running")
    data_dir, scratch = host_dir(t.container, t.data_path or "/")
    return Placement(member_cgroup(t.container.state.pid), whole_disk(data_dir), data_dir, scratch)


def _rate(n: float) -> str:
    return f"{n / 1e6:.2f} MB/s" if n >= 1e5 else f"{n / 1e3:.0f} kB/s"


class DiskSlow(Fault):
    kind = "disk-slow"
    help = "throttle the block I/O of the member's data disk in its own cgroup (blk-throttle); undone by lifting it"
    Params = DiskSlowParams
    looks_like = ("slow disk: the member runs and answers, but every write that waits for the disk (a WAL fsync, "
                  "a commit) takes long; its fsync latency rises and it may fall behind or lose leadership")
    advice = ("Lift the I/O limit on {who} (io.max / blkio.throttle) and check the disk under its data: a noisy "
              "neighbour, a degraded volume, burst credits spent.")
    out_of_service = False

    def label(self) -> str:
        p = self.params
        parts = [p.write_bps and f"write {_rate(p.write_bps)}", p.read_bps and f"read {_rate(p.read_bps)}",
                 p.write_iops and f"{p.write_iops} write IOPS", p.read_iops and f"{p.read_iops} read IOPS"]
        return f"disk-slow ({', '.join(x for x in parts if x) or 'no cap'})"

    def wanted(self) -> dict[str, int | None]:
        p = self.params
        return {"rbps": p.read_bps, "wbps": p.write_bps, "riops": p.read_iops, "wiops": p.write_iops}

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            if t.data_path is None:
                return (f"{self.kind}: {t.service} has no data path declared by its subject (Subject.data_paths); "
                        "nothing was injected")
        for t in targets:
            try:
                placement(t)
            except CannotReach as exc:
                return f"{self.kind}: cannot throttle {t.service}'s disk from this worker ({exc}); nothing was injected"
        return None

    def in_effect(self, t: Target) -> bool:
        try:
            p = placement(t)
        except CannotReach:
            return False
        want = {k: v for k, v in self.wanted().items() if v}
        return p.cgroup.limits(p.device).get(p.device) == want

    def inject(self, t: Target) -> bool:
        if self.in_effect(t):
            return False
        p = placement(t)
        p.cgroup.set(p.device, self.wanted())
        return True

    def undo(self, t: Target) -> bool:
        try:
            p = placement(t)
        except CannotReach:  # stopped or restarted: its cgroup, and the limit in it, are gone
            return False
        # A probe file left by a worker killed mid-probe goes too (it would go with the container anyway).
        (p.scratch_dir / probe_name(t.tag)).unlink(missing_ok=True)
        if not p.cgroup.limits(p.device):
            return False
        p.cgroup.clear(p.device)
        return True

    def evidence_of_effect(self, t: Target) -> str | None:
        """The throughput a direct write into the member's data directory gets from inside its cgroup: the cap,
        measured by the kernel rather than read back from a file we wrote."""
        if not self.in_effect(t):
            return None
        if not (self.params.write_bps or self.params.write_iops):
            # Read caps only: a probe read would come from the page cache. The kernel's own record is the evidence.
            return f"{t.service}: {self.label()} in force in its cgroup"
        try:
            p = placement(t)
            took, written = probe_write(p, t.tag, self.params.write_bps, self.params.write_iops)
        except (CannotReach, OSError, subprocess.SubprocessError):
            return None
        return (f"{t.service}: {written // 1024} KiB written direct to its data disk ({p.device}) in {took:.2f} s "
                f"from its cgroup ({_rate(written / took)}), under {self.label()}")

    @classmethod
    def member_signs(cls, c: Container) -> list[str]:
        if not c.state.running or not c.state.pid:
            return []
        try:
            cg = member_cgroup(c.state.pid)
            return [f"block I/O limit on {dev}: " + " ".join(f"{k}={v}" for k, v in limits.items())
                    for dev, limits in cg.limits().items()]
        except (CannotReach, DockerException, OSError, ValueError):
            return []

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        signs = cls.signs_on(c)
        if not signs:
            return None
        return f"{c.service}'s disk I/O is throttled in its cgroup ({'; '.join(signs)})"


PROBE_BYTES = 4 * 1024 * 1024


def probe_name(tag: str) -> str:
    return f".chaos-probe-{tag}"


def probe_write(p: Placement, tag: str, wbps: int | None, wiops: int | None) -> tuple[float, int]:
    """Seconds and bytes of one O_DIRECT write (4 KiB blocks) into the member's data disk by a child process moved
    into the member's cgroup, sized to take about a second under the cap (blk-throttle lets a short burst through
    at the start of a slice, so less would measure the burst). The file is removed."""
    size = PROBE_BYTES
    if wbps:
        size = min(size, max(4096, wbps // 4096 * 4096))
    if wiops:
        size = min(size, max(4096, wiops * 4096))
    target = p.scratch_dir / probe_name(tag)
    started = time.monotonic()
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=4096", f"count={size // 4096}", "oflag=direct",
                        "conv=fsync", "status=none"], check=True, timeout=60, preexec_fn=p.cgroup.add_self)
    finally:
        target.unlink(missing_ok=True)
    return max(time.monotonic() - started, 1e-6), size
