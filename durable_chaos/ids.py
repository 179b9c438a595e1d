"""Names derived from a run's ids. Every path that acts for a run (the run itself, its guard, the reaper, the
notifier) derives them the same way, so they agree without asking each other."""

from __future__ import annotations

import hashlib


def fault_tag(workflow_id: str, run_id: str, number: int = 1) -> str:
    """Eight hex digits naming one of a run's faults (`CHAOS-<tag>` chains): short enough for iptables'
    28-character chain names, and derived from the run and the fault's number (from 1), so every path that undoes
    it (the run, its guard, the reaper) agrees. The first fault's is the one runs had before they had steps."""
    key = f"{workflow_id}/{run_id}" + (f"/{number}" if number > 1 else "")
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def fault_guard_id(workflow_id: str, run_id: str, number: int = 1) -> str:
    """The workflow id of the guard a chaos run starts right before it injects its `number`th fault."""
    return f"{workflow_id}-fault-guard-{run_id}" + (f"-{number}" if number > 1 else "")


def notify_id(workflow_id: str, run_id: str) -> str:
    """The workflow id of the notifications a chaos run sends when it ends: one per run."""
    return f"{workflow_id}-notify-{run_id}"


def host_queue(task_queue: str, host: str) -> str:
    """The task queue of one Docker host's activities: the fleet's queue (where workflows run) and the host's name.
    Every worker serving that host polls it; the server hands an activity only to one of them."""
    return f"{task_queue}@{host}"


def host_record_id(task_queue: str, host: str) -> str:
    """The workflow id of a host's record (its engine's ID as first seen, the workers that served it)."""
    return f"chaos-host-{task_queue}-{host}"


def run_workflow_id(project: str, host: str | None) -> str:
    """A run's workflow id: the subject copy it holds (the per-subject lock), on its host. The same project name on
    two hosts is two subjects; runs from before hosts carried the project alone."""
    return project if host is None else f"{project}@{host}"
