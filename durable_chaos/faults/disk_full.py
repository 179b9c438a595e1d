"""disk-full: a ballast file, named after the run's fault tag, fills the member's bounded data volume to ENOSPC.

Only a volume that is a filesystem of its own with a size (a loop-backed ext4, a tmpfs with `size=`) is filled:
data in the container's writable layer or a bind mount lives on the host's disk, and filling it would fill the
host's. The ballast is written and removed by a short-lived helper with the volume mounted, so the member need run
no shell of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from python_on_whales import Container, DockerException, docker

from durable_chaos.contracts import ContainerState
from durable_chaos.faults.base import BadFault, Fault, Target
from durable_chaos.faults.disk import mount_holding
from durable_chaos.faults.netns import nettools_image, run_helper
from durable_chaos.images import ImageSpec


class DiskFullParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def ballast_name(tag: str) -> str:
    return f".chaos-ballast-{tag}"


@dataclass(frozen=True)
class DataVolume:
    """The Docker volume holding a member's data directory, and where it is mounted in the member."""

    name: str
    destination: str


def bounded_volume(c: Container, data_path: str) -> DataVolume | str:
    """The volume under `data_path` if it is a filesystem of its own, bounded by its own size (a local volume with a
    `type`: a loop-backed ext4, a tmpfs with a size), or why not, as one line."""
    best = mount_holding(c, data_path)
    if best is None or best.type != "volume":
        where = "its container's writable layer" if best is None else f"a {best.type} mount of {best.source}"
        return f"its data ({data_path}) is in {where}, on the host's disk: filling it would fill the host's"
    opts = (docker.volume.inspect(best.name).options or {})
    if not opts.get("type") or (opts["type"] == "tmpfs" and "size=" not in opts.get("o", "")):
        return (f"its data volume {best.name} is not a filesystem of its own with a size (a loop-backed ext4, a "
                "tmpfs with size=): filling it would fill the host's disk")
    return DataVolume(best.name, str(best.destination))


def run_on_volume(volume: str, script: str, tag: str) -> str:
    """Run `script` in a short-lived helper with the volume mounted at /v (the daemon mounts it, whether the member
    runs or not, and removes the helper when it exits). No capabilities: root in the helper owns the volume's files."""
    return run_helper(script, tag, volumes=[(volume, "/v")], networks=["none"], cap_drop=["ALL"])


def fill_script(tag: str) -> str:
    """Allocate what is free, then write until ENOSPC: the volume is full to the last block (fallocate alone may
    leave a few blocks free for its own metadata). Reports bytes of ballast; `already` if it was in place."""
    f = f"/v/{ballast_name(tag)}"
    return (f'if [ -e {f} ]; then echo already; exit 0; fi\n'
            f'fallocate -l "$(df -B1 --output=avail /v | tail -1)" {f} 2>/dev/null || true\n'
            f'dd if=/dev/zero of={f} bs=4096 oflag=append conv=notrunc status=none 2>/dev/null || true\n'
            f'sync -f /v\necho injected')


class DiskFull(Fault):
    kind = "disk-full"
    help = "fill the member's (bounded) data volume to the last block with a ballast file; undone by deleting it"
    Params = DiskFullParams
    looks_like = ("disk full: the member runs, but every write to its data fails with ENOSPC (no space left on "
                  "device): it refuses writes, crashes on its WAL, or stalls, and says so in its log")
    advice = ("Free space on {who}'s data volume (a ballast file, old snapshots or WAL) and check how it behaves once "
              "it can write again; alert on free space before it reaches zero.")
    out_of_service = False

    def images(self) -> list[ImageSpec]:
        return [nettools_image()]

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            if t.data_path is None:
                return (f"{self.kind}: {t.service} has no data path declared by its subject (Subject.data_paths); "
                        "nothing was injected")
            found = bounded_volume(t.container, t.data_path)
            if isinstance(found, str):
                return f"{self.kind}: {t.service}: {found}; nothing was injected"
        return None

    def _volume(self, t: Target) -> DataVolume:
        found = bounded_volume(t.container, t.data_path or "/")
        if isinstance(found, str):
            raise BadFault(f"{self.kind}: {t.service}: {found}")
        return found

    def in_effect(self, t: Target) -> bool:
        f = f"/v/{ballast_name(t.tag)}"
        return run_on_volume(self._volume(t).name, f"[ -e {f} ] && echo yes || echo no", t.tag).strip() == "yes"

    def inject(self, t: Target) -> bool:
        return run_on_volume(self._volume(t).name, fill_script(t.tag), t.tag).strip().endswith("injected")

    def undo(self, t: Target) -> bool:
        f = f"/v/{ballast_name(t.tag)}"
        script = f"if [ -e {f} ]; then rm -f {f}; echo removed; else echo absent; fi"
        return run_on_volume(self._volume(t).name, script, t.tag).strip() == "removed"

    def evidence_of_effect(self, t: Target) -> str | None:
        """The volume's fullness as df reads it, with the ballast's size."""
        f = f"/v/{ballast_name(t.tag)}"
        try:
            volume = self._volume(t)
            out = run_on_volume(volume.name, f"[ -e {f} ] || exit 0; df -B1 --output=pcent,avail /v | tail -1; "
                                f"stat -c %s {f}", t.tag).split()
        except (BadFault, DockerException):
            return None
        if len(out) != 3 or out[1] != "0":
            return None
        return (f"{t.service}: its data volume {volume.name} is {out[0]} full, 0 bytes free "
                f"({int(out[2]) // 2**20} MiB of ballast)")

    @classmethod
    def member_signs(cls, c: Container) -> list[str]:
        """Ballast files on the member's volumes, read where the daemon mounts them on this host (no helper: this is
        asked of every member whenever evidence is gathered)."""
        try:
            signs = []
            for m in c.mounts or []:
                if m.type == "volume" and Path(m.source).is_dir():
                    found = sorted(p.name for p in Path(m.source).glob(".chaos-ballast-*"))
                    if found:
                        st = os.statvfs(m.source)
                        signs.append(f"volume {m.name} at {m.destination}: {st.f_bavail * st.f_frsize} bytes free, "
                                     f"ballast {', '.join(found)}")
            return signs
        except (DockerException, OSError):
            return []

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        signs = cls.signs_on(c)
        return f"{c.service}'s data volume is full: {'; '.join(signs)}" if signs else None
