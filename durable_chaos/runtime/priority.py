"""The worker runs ahead of the systems it breaks.

A chaos run loads its subject on purpose, and the subject's containers share the worker's CPUs. On a saturated host
(20 etcd copies under load on 2 cores) the worker's event loop waited for a core most of each second, its heartbeats
missed their 1.5 s timeout and nearly every run failed; with the worker at a higher priority than the containers the
same 20 runs all passed once (bench: parallel sweep, session 6). So a worker raises its own scheduling priority when
it may, for every one of its threads: until session 11 only the calling thread was raised, and the SDK's threads,
which send the heartbeats, stayed at nice 0. 20 copies are still the edge of a 2-core host (docs/benchmark.md).

A thread's nice ranks it only within its scheduling group. Where the kernel groups processes by session
(autogroup, /proc/sys/kernel/sched_autogroup_enabled: on these machines, and by default on many distributions'
kernels), the worker's whole terminal session (the worker, the Temporal server it started, the docker CLI it runs)
is one group that competes with Docker's containers (the `docker` cpu cgroup) as an equal: at 20 copies the two
split the cores about evenly whatever the worker's nice (session 22 found this). So the worker also gives its session's
autogroup the same nice, which weighs that group ahead of the containers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

NICE = -10  # ahead of the containers (0) without starving the Docker daemon or the Temporal server


def _threads(pid: int | str = "self") -> list[int]:
    """A process's threads. On Linux a priority belongs to a thread, and a thread inherits its creator's: the
    SDK's own threads (which send the heartbeats and poll) exist from the moment the client connects."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [0] if pid == "self" else []


def raise_threads(pid: int | str = "self") -> list[int]:
    """Every thread of `pid` that ran behind NICE, raised to it (PermissionError if not permitted)."""
    behind = []
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, tid) > NICE:
                os.setpriority(os.PRIO_PROCESS, tid, NICE)
                behind.append(tid)
    return behind


AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def raise_autogroup(pid: int | str = "self") -> bool:
    """The autogroup of `pid`'s session raised to NICE if the kernel groups by session and it ran behind; whether
    it was raised (PermissionError if not permitted). Every process of the session is weighed as that group."""
    try:
        if AUTOGROUP_ENABLED.read_text().strip() != "1":
            return False
        group = Path(f"/proc/{pid}/autogroup")
        current = int(group.read_text().rsplit("nice", 1)[1])  # "/autogroup-1 nice 0"
    except (OSError, IndexError, ValueError):  # no autogroup here (another kernel, or a process that ended)
        return False
    if current <= NICE:
        return False
    group.write_text(str(NICE))
    return True


def start_ahead() -> None:
    """For a process this one starts that serves the runs (the embedded Temporal server): it starts at NICE, and
    every thread it makes inherits it, and so does its session's autogroup (the server has a session of its own, to
    outlive the command that started it). Called in the child before it runs; quietly nothing where not
    permitted."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
        raise_autogroup()
        if realtime_wanted():
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))


# CHAOS_WORKER_REALTIME=1: the worker (and the dev server the CLI starts) run at real-time priority instead.
REALTIME_ENV = "CHAOS_WORKER_REALTIME"


def realtime_wanted() -> bool:
    return os.environ.get(REALTIME_ENV) == "1"


def realtime_threads(pid: int | str = "self", reset_on_fork: bool = True) -> None:
    """Every thread of `pid` under SCHED_RR at the lowest real-time priority: it runs the moment it is woken,
    ahead of every normal process, however many of them are runnable (nice only weighs it among them: at 20 etcd
    copies the worker's threads still waited for a core half of each second at nice -10). The kernel keeps 5 % of
    each second for normal processes (sched_rt_runtime_us), so a spinning thread cannot take a core whole.
    `reset_on_fork`: a process or thread it starts later (the docker CLI, a thread pool's) starts as a normal one;
    off for the Temporal server, whose runtime starts threads of its own as it needs them."""
    policy = os.SCHED_RR | (os.SCHED_RESET_ON_FORK if reset_on_fork else 0)
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(tid, policy, os.sched_param(1))


def run_ahead() -> str:
    """Raise every thread of this process, and its session's autogroup, to NICE if lower and permitted; one line
    saying what happened."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    refused = ""
    if realtime_wanted():
        try:
            realtime_threads()
            return "worker priority: real-time (SCHED_RR 1), ahead of the subjects under test"
        except PermissionError:
            refused = f" ({REALTIME_ENV}=1 refused: real-time needs root or CAP_SYS_NICE)"
    try:
        raised = raise_threads()
        grouped = raise_autogroup()
    except PermissionError:
        return (f"worker priority: nice {current} (not allowed to raise it: on a busy host the subjects under test "
                f"can starve the worker's heartbeats; run it as root or with CAP_SYS_NICE){refused}")
    if not raised and not grouped:
        return f"worker priority: nice {current}{refused}"
    session = " (and its session's scheduling group)" if grouped else ""
    return f"worker priority: nice {NICE}{session}, ahead of the subjects under test{refused}"
