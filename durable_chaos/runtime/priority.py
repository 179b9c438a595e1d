"""The worker runs ahead of the systems it breaks.

A chaos run loads its subject on purpose, and the subject's containers share the worker's CPUs. On a saturated host
(20 etcd copies under load on 2 cores) the worker's event loop waited for a core most of each second, its heartbeats
missed their 1.5 s timeout and nearly every run failed; with the worker at a higher priority than the containers the
same 20 runs all passed once (bench: parallel sweep, session 6). So a worker raises its own scheduling priority when
it may, for every one of its threads: until session 11 only the calling thread was raised, and the SDK's threads,
which send the heartbeats, stayed at nice 0. 20 copies are still the edge of a 2-core host (docs/benchmark.md).
"""

from __future__ import annotations

import contextlib
import os

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


def start_ahead() -> None:
    """For a process this one starts that serves the runs (the embedded Temporal server): it starts at NICE, and
    every thread it makes inherits it. Called in the child before it runs; quietly nothing where not permitted."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)


def run_ahead() -> str:
    """Raise every thread of this process to NICE if it is lower and permitted; one line saying what happened."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        if not raise_threads():
            return f"worker priority: nice {current}"
    except PermissionError:
        return (f"worker priority: nice {current} (not allowed to raise it: on a busy host the subjects under test "
                f"can starve the worker's heartbeats; run it as root or with CAP_SYS_NICE)")
    return f"worker priority: nice {NICE}, ahead of the subjects under test"
