"""A member's control groups, as the Docker host sees them: where the resource kinds (cpu, memory, process-pause,
disk-slow) read and write.

Why the cgroup files and not `docker update`: Docker 20.10 can set a CPU or memory limit on a running container but
cannot take it away again (`--cpus 0` leaves the quota in place, `--memory -1` is refused), so a fault injected
through it could never be undone. The kernel's own files can: `-1`/`max` is "no limit". A member restarted by
anyone gets a fresh cgroup from its HostConfig, which never held the fault. The resource kinds refuse a member
whose HostConfig sets a limit of its own, so undoing means "no limit" and never needs a value from the inject.

The worker writes these files as root of the Docker host (the activities that touch Docker run on the host that
owns the containers). Both layouts are handled: cgroup v1 (one hierarchy per controller, as on the CI machines
here: Docker's cgroupfs driver) and v2 (one unified tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class CannotReach(RuntimeError):
    """The member's cgroup (or what is under it) is not visible from this process: one line why."""


@dataclass(frozen=True)
class Cgroup:
    """One controller's directory of a member's cgroup, and which hierarchy it is in."""

    path: Path
    v2: bool

    def read(self, name: str) -> str:
        """A file's content; "" when the member stopped meanwhile (its cgroup went with it)."""
        try:
            return (self.path / name).read_text()
        except FileNotFoundError:
            return ""

    def write(self, name: str, value: str) -> None:
        (self.path / name).write_text(f"{value}\n")

    def stat(self, name: str) -> dict[str, int]:
        """A flat keyed file (`cpu.stat`, `memory.events`) as numbers."""
        out = {}
        for line in self.read(name).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out


def controller(pid: int, v1_name: str, v2_file: str) -> Cgroup:
    """The cgroup of process `pid` for one controller: v1's `v1_name` hierarchy where it is mounted, else the
    unified tree, which must then offer `v2_file` (the controller enabled for it)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise CannotReach(f"process {pid} is not visible here ({exc.strerror})") from None
    by_controller = {ctl: path for _, ctls, path in (line.split(":", 2) for line in lines) for ctl in ctls.split(",")}
    if v1_name in by_controller and (ROOT / v1_name).is_dir():
        found = Cgroup(ROOT / v1_name / by_controller[v1_name].lstrip("/"), v2=False)
    else:
        unified = ROOT / "unified" if (ROOT / "unified").is_dir() else ROOT
        found = Cgroup(unified / by_controller.get("", "/").lstrip("/"), v2=True)
        if not (found.path / v2_file).exists():
            raise CannotReach(f"cgroup {found.path} has no {v2_file} (the controller is not enabled for it)")
    if not found.path.is_dir():
        raise CannotReach(f"cgroup {found.path} is not visible here")
    return found


def processes(pid: int) -> list[int]:
    """Every process in the member's cgroup (host PIDs), from the pid of its first process."""
    group = controller(pid, "pids", "cgroup.procs")
    return [int(p) for p in group.read("cgroup.procs").split()]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # it exited meanwhile
        return ""


def state(pid: int) -> str:
    """The one-letter state in /proc/PID/stat (T: stopped by a signal); "" if it exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split(" ", 1)[0]  # after "(comm) ", which may itself hold spaces
