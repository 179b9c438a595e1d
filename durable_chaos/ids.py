"""Names derived from a run's ids. Every path that acts for a run (the run itself, its guard, the reaper, the
notifier) derives them the same way, so they agree without asking each other."""

from __future__ import annotations

import hashlib


def fault_tag(workflow_id: str, run_id: str) -> str:
    """Eight hex digits naming one run's fault (`CHAOS-<tag>` chains): short enough for iptables' 28-character
    chain names, and derived from the run, so every path that undoes it (the run, its guard, the reaper) agrees."""
    return hashlib.sha256(f"{workflow_id}/{run_id}".encode()).hexdigest()[:8]


def fault_guard_id(workflow_id: str, run_id: str) -> str:
    """The workflow id of the guard a chaos run starts right before it injects: one guard per run."""
    return f"{workflow_id}-fault-guard-{run_id}"


def notify_id(workflow_id: str, run_id: str) -> str:
    """The workflow id of the notifications a chaos run sends when it ends: one per run."""
    return f"{workflow_id}-notify-{run_id}"
