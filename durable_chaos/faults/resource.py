"""Resource faults on a member, through its own control groups: a CPU quota, a memory limit, and SIGSTOP of one
named process inside it. Why the cgroup files rather than `docker update`, and why a member with a limit of its
own is refused: `faults/cgroups.py`.

Each kind reads its effect back from the kernel: the CPU controller's throttle counters, the memory controller's
limit hits and OOM kills, a process's state T. A member restarted meanwhile has a fresh cgroup and fresh
processes: undo then finds nothing in effect, and says so.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from python_on_whales import Container, DockerException

from durable_chaos.contracts import ContainerState
from durable_chaos.faults import cgroups
from durable_chaos.faults.base import Fault, Target
from durable_chaos.faults.cgroups import CannotReach, Cgroup

UNLIMITED_V1 = {"cpu.cfs_quota_us": "-1", "memory.limit_in_bytes": "-1"}
# cgroup v1 reports "no memory limit" as the largest multiple of the page size that fits in a signed 64-bit number.
V1_NO_LIMIT = 1 << 62


def running_pid(c: Container) -> int:
    c.reload()
    if not c.state.running or not c.state.pid:
        raise CannotReach(f"{c.name} is not running")
    return c.state.pid


class _Limit(Fault):
    """A limit the kernel enforces in one controller of the member's cgroup; undone by writing "no limit"."""

    v1_name: ClassVar[str]  # the controller's v1 hierarchy
    v2_file: ClassVar[str]  # the file the v2 limit lives in
    declared: ClassVar[str]  # HostConfig fields holding a limit the member's compose file set

    def group(self, c: Container) -> Cgroup:
        return cgroups.controller(running_pid(c), self.v1_name, self.v2_file)

    @classmethod
    def limit_now(cls, g: Cgroup) -> int | None:
        """The limit in force, in the kind's unit (None: no limit)."""
        raise NotImplementedError

    def write_limit(self, g: Cgroup, c: Container) -> None:
        raise NotImplementedError

    def write_no_limit(self, g: Cgroup) -> None:
        raise NotImplementedError

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            own = {f: getattr(t.container.host_config, f, 0) for f in self.declared.split()}
            if any(own.values()):
                limits = ", ".join(f"{k}={v}" for k, v in own.items() if v)
                return (f"{self.kind}: {t.service} has a limit of its own ({limits}); this fault only limits members "
                        "without one, so undoing it is lifting it; nothing was injected")
            try:
                self.group(t.container)
            except CannotReach as exc:
                return f"{self.kind}: cannot reach {t.service}'s cgroup from this worker ({exc}); nothing was injected"
        return None

    def in_effect(self, t: Target) -> bool:
        try:
            return self.limit_now(self.group(t.container)) is not None
        except CannotReach:
            return False

    def inject(self, t: Target) -> bool:
        if self.in_effect(t):
            return False
        self.write_limit(self.group(t.container), t.container)
        return True

    def undo(self, t: Target) -> bool:
        try:
            g = self.group(t.container)
        except CannotReach:  # stopped or restarted: the limit went with its cgroup
            return False
        if self.limit_now(g) is None:
            return False
        self.write_no_limit(g)
        return True

    @classmethod
    def member_signs(cls, c: Container) -> list[str]:
        if any(getattr(c.host_config, f, 0) for f in cls.declared.split()):
            return []  # its own limit, as its compose file set it: not a fault
        try:
            limit = cls.limit_now(cgroups.controller(running_pid(c), cls.v1_name, cls.v2_file))
        except (CannotReach, DockerException, OSError, ValueError):
            return []
        return [] if limit is None else [cls.sign(limit)]

    @classmethod
    def sign(cls, limit: int) -> str:
        raise NotImplementedError

    limited: ClassVar[str]  # what a member under the limit is, in the diagnosis's words

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        signs = cls.signs_on(c)
        return f"{c.service} is {cls.limited}: {signs[0]}, which its compose file does not set" if signs else None


class CpuParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(default=0.1, ge=0.01, le=64, description="CPU time the member may use, in CPUs")


class Cpu(_Limit):
    kind = "cpu"
    help = "cap the member's CPU time with a quota in its cgroup (CFS bandwidth); undone by lifting it"
    Params = CpuParams
    looks_like = ("CPU-starved: running and answering, but its cgroup's CPU quota throttles it, so every answer "
                  "waits for CPU time; latency rises, timeouts and lost leadership follow under load")
    advice = "Lift the CPU quota on {who} (its cgroup's cpu.cfs_quota_us / cpu.max), or find what starves it."
    out_of_service = False
    v1_name, v2_file = "cpu", "cpu.max"
    declared = "nano_cpus cpu_quota"
    limited = "CPU-limited"

    def label(self) -> str:
        return f"cpu {self.params.cpus:g} CPU"

    @classmethod
    def limit_now(cls, g: Cgroup) -> int | None:
        """The quota in µs per period, None without one."""
        if g.v2:
            quota = g.read("cpu.max").split()[:1]
            return None if not quota or quota[0] == "max" else int(quota[0])
        quota = int(g.read("cpu.cfs_quota_us").strip() or -1)
        return None if quota < 0 else quota

    @staticmethod
    def period(g: Cgroup) -> int:
        if g.v2:
            return int((g.read("cpu.max").split() + ["", "100000"])[1])
        return int(g.read("cpu.cfs_period_us").strip() or 100000)

    def write_limit(self, g: Cgroup, c: Container) -> None:
        quota = max(1000, round(self.params.cpus * self.period(g)))  # the kernel's smallest quota is 1 ms
        if g.v2:
            g.write("cpu.max", f"{quota} {self.period(g)}")
        else:
            g.write("cpu.cfs_quota_us", str(quota))

    def write_no_limit(self, g: Cgroup) -> None:
        if g.v2:
            g.write("cpu.max", f"max {self.period(g)}")
        else:
            g.write("cpu.cfs_quota_us", "-1")

    def evidence_of_effect(self, t: Target) -> str | None:
        """Its cgroup was throttled: with no quota before (a member with its own is refused), every throttled
        period counted there is this fault's."""
        try:
            stat = self.group(t.container).stat("cpu.stat")
        except CannotReach:
            return None
        times = stat.get("nr_throttled", 0)
        throttled_s = stat.get("throttled_usec", 0) / 1e6 or stat.get("throttled_time", 0) / 1e9
        if not times:
            return None
        return f"{t.service}: throttled in {times} CPU periods ({throttled_s:.1f} s held back) under {self.label()}"

    @classmethod
    def sign(cls, limit: int) -> str:
        return f"a CPU quota of {limit} µs per period in its cgroup"



class MemoryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit_mb: float | None = Field(default=None, ge=4, le=1 << 20, description="the limit; default: a fifth "
                                   "above what the member uses now (pressure: its page cache is reclaimed). Below "
                                   "its working set the kernel OOM-kills it")


class Memory(_Limit):
    kind = "memory"
    help = "limit the member's memory in its cgroup (default: 20% above its use now); pressure, or an OOM kill"
    Params = MemoryParams
    looks_like = ("memory-starved: its cgroup's memory limit is at or below what it needs, so the kernel reclaims "
                  "its pages (slow answers, disk reads) or OOM-kills it (exit code 137, OOMKilled)")
    advice = "Lift the memory limit on {who} (memory.limit_in_bytes / memory.max), start it if it was OOM-killed."
    out_of_service = False
    v1_name, v2_file = "memory", "memory.max"
    declared = "memory"
    limited = "memory-limited"

    def label(self) -> str:
        return f"memory {self.params.limit_mb:g} MB" if self.params.limit_mb else "memory (its use + 20%)"

    @classmethod
    def limit_now(cls, g: Cgroup) -> int | None:
        """The limit in bytes, None without one."""
        raw = (g.read("memory.max") if g.v2 else g.read("memory.limit_in_bytes")).strip()
        if not raw or raw == "max" or int(raw) >= V1_NO_LIMIT:
            return None
        return int(raw)

    def write_limit(self, g: Cgroup, c: Container) -> None:
        used = int((g.read("memory.current") if g.v2 else g.read("memory.usage_in_bytes")).strip())
        # Default: room to breathe, little to grow. A limit at its use now leaves none: the next allocation
        # OOM-kills it (etcd, measured).
        limit = int(self.params.limit_mb * 1024 * 1024) if self.params.limit_mb else int(1.2 * used)
        name = "memory.max" if g.v2 else "memory.limit_in_bytes"
        try:
            g.write(name, str(limit))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # v1 refuses a limit below what the kernel cannot reclaim: the tightest it takes is the use now, which
            # is the OOM kill asked for (v2 takes any limit and OOM-kills at once).
            g.write(name, str(used))

    def write_no_limit(self, g: Cgroup) -> None:
        g.write("memory.max" if g.v2 else "memory.limit_in_bytes", "max" if g.v2 else "-1")

    def in_effect(self, t: Target) -> bool:
        return super().in_effect(t) or self._oom_killed(t.container)

    @staticmethod
    def _oom_killed(c: Container) -> bool:
        c.reload()
        return not c.state.running and bool(c.state.oom_killed)

    def undo(self, t: Target) -> bool:
        if self._oom_killed(t.container):
            # The kernel killed it under the limit: its cgroup (and the limit) went with it; a start brings it back
            # with its own HostConfig, which never held the limit.
            t.container.start()
            return True
        return super().undo(t)

    def evidence_of_effect(self, t: Target) -> str | None:
        if self._oom_killed(t.container):
            return f"{t.service}: OOM-killed under {self.label()}"
        try:
            g = self.group(t.container)
        except CannotReach:
            return None
        hits = g.stat("memory.events").get("max", 0) if g.v2 else int(g.read("memory.failcnt").strip() or 0)
        if not hits:
            return None
        limit = self.limit_now(g) or 0
        return f"{t.service}: held at its limit {hits} times ({limit / 2**20:.0f} MiB, {self.label()})"

    @classmethod
    def sign(cls, limit: int) -> str:
        return f"a memory limit of {limit / 2**20:.0f} MiB in its cgroup"



class ProcessPauseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    process: str | None = Field(default=None, min_length=1, max_length=15,
                                description="a process name as /proc/PID/comm reads it (patroni, postgres); "
                                            "default: the member's main process")


class ProcessPause(Fault):
    kind = "process-pause"
    help = "SIGSTOP one named process inside the member (the rest keep running); undone by SIGCONT"
    Params = ProcessPauseParams
    looks_like = ("a process stopped: the container runs and its other processes answer, but one of them is "
                  "stopped (state T), so what it serves hangs: connections accepted, never answered")
    advice = "Send SIGCONT to the stopped process in {who} (kill -CONT), and find who stopped it (a debugger, an " \
             "operator)."
    out_of_service = False

    def label(self) -> str:
        return f"process-pause {self.params.process or '(main process)'}"

    def name(self, c: Container) -> str:
        return self.params.process or cgroups.comm(running_pid(c))

    def matching(self, c: Container) -> list[int]:
        """Host PIDs of the member's processes with the name; [] when it is not running."""
        try:
            name = self.name(c)
            return [p for p in cgroups.processes(running_pid(c)) if cgroups.comm(p) == name]
        except CannotReach:
            return []

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            try:
                names = sorted({cgroups.comm(p) for p in cgroups.processes(running_pid(t.container))} - {""})
            except CannotReach as exc:
                return f"{self.kind}: cannot see {t.service}'s processes from this worker ({exc}); nothing was injected"
            wanted = self.params.process
            if wanted is not None and wanted not in names:
                return (f"{self.kind}: {t.service} runs no process named {wanted!r} (it runs: {', '.join(names)}); "
                        "nothing was injected")
        return None

    def in_effect(self, t: Target) -> bool:
        pids = self.matching(t.container)
        return bool(pids) and all(cgroups.state(p) == "T" for p in pids)

    def inject(self, t: Target) -> bool:
        if self.in_effect(t):
            return False
        for pid in self.matching(t.container):
            os.kill(pid, signal.SIGSTOP)
        return True

    def undo(self, t: Target) -> bool:
        stopped = [p for p in self.matching(t.container) if cgroups.state(p) == "T"]
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        return bool(stopped)

    def evidence_of_effect(self, t: Target) -> str | None:
        stopped = [p for p in self.matching(t.container) if cgroups.state(p) == "T"]
        if not stopped:
            return None
        return f"{t.service}: {self.name(t.container)} stopped (state T): pid {', '.join(map(str, stopped))}"

    @classmethod
    def member_signs(cls, c: Container) -> list[str]:
        if c.state.paused:
            return []  # the whole container is frozen: that is the pause kind's sign, not a stopped process
        try:
            return [f"{cgroups.comm(p)} (pid {p}) is stopped" for p in cgroups.processes(running_pid(c))
                    if cgroups.state(p) == "T"]
        except (CannotReach, DockerException, OSError, ValueError):
            return []

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        signs = cls.signs_on(c)
        return f"{c.service} runs, but {'; '.join(signs)} (SIGSTOP)" if signs else None
