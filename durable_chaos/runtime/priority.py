"""The worker runs ahead of the systems it breaks.

A chaos run loads its subject on purpose, and the subject's containers share the worker's CPUs. On a saturated host
(20 etcd copies under load on 2 cores) the worker's event loop waited for a core most of each second, its heartbeats
missed their 1.5 s timeout and nearly every run failed; with the worker at a higher priority than the containers the
same 20 runs all passed (bench: parallel sweep). So a worker raises its own scheduling priority when it may.
"""

from __future__ import annotations

import os

NICE = -10  # ahead of the containers (0) without starving the Docker daemon or the Temporal server


def run_ahead() -> str:
    """Raise this process's priority to NICE if it is lower and permitted; one line saying what happened."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current <= NICE:
        return f"worker priority: nice {current}"
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except PermissionError:
        return (f"worker priority: nice {current} (not allowed to raise it: on a busy host the subjects under test "
                f"can starve the worker's heartbeats; run it as root or with CAP_SYS_NICE)")
    return f"worker priority: nice {NICE}, ahead of the subjects under test"
