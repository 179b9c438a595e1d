"""Member logs for the evidence bundle: redacted, error lines first, size-capped with a visible marker.

A killed member's survivors log the story of its death (lost peer streams, failed probes); a cluster that logs a
lot must not crowd that out, nor blow up the prompt or the event history. So the excerpt keeps, with a line of
context on each side: first the warning/error lines since the fault, then the earlier ones newest first; then it
fills what is left of the budget with the most recent lines, and says how many it left out where it left them out.
Lines come from `docker logs --timestamps`: the daemon's timestamp says which side of the fault a line is on.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from activities.redact import redact
from durable_chaos.contracts import MemberLogs

BUDGET_CHARS = 6000  # per member; three etcd members make a prompt of about five thousand tokens
MAX_LINE_CHARS = 500
CONTEXT_LINES = 1
# The words plain-text logs use for trouble; a subject adds the markers of its own log format (its hints).
_TROUBLE = (r"(?i)\b(?:error|fatal|panic|fail(?:ed|ure)?|refused|unreachable|timed? ?out|lost|oom|killed)\b")


def _trouble(markers: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join([_TROUBLE, *(f"(?i:{m})" for m in markers)]))


def _omitted(n: int) -> str:
    return f"[... {n} line{'s' if n != 1 else ''} omitted ...]"


def docker_stamp(at: datetime) -> str:
    """`at` as the daemon writes timestamps (RFC 3339, nanoseconds, fixed width, UTC): comparable as strings."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def excerpt(service: str, raw: str, fault_at: datetime | None = None, budget: int = BUDGET_CHARS,
            markers: tuple[str, ...] = ()) -> MemberLogs:
    """`raw` is `docker logs --timestamps` output: every line starts with the daemon's timestamp and a space."""
    stamps: list[str] = []
    lines: list[str] = []
    # Redacted whole (a private key spans lines) and before measuring: the budget counts what leaves the worker.
    for line in redact(raw).splitlines():
        stamp, _, text = line.partition(" ")
        if text.strip():
            stamps.append(stamp)
            lines.append(text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + " [... line cut ...]")
    keep: set[int] = set()
    used = 0

    def take(i: int) -> bool:
        nonlocal used
        if i in keep:
            return True
        cost = len(lines[i]) + 1
        if used + cost > budget:
            return False
        keep.add(i)
        used += cost
        return True

    cutoff = docker_stamp(fault_at) if fault_at else ""
    pattern = _trouble(markers)
    trouble = [i for i, line in enumerate(lines) if pattern.search(line)]
    since_fault = [i for i in trouble if stamps[i] >= cutoff]
    before_fault = [i for i in reversed(trouble) if stamps[i] < cutoff]
    for i in since_fault + before_fault:
        if take(i):
            for j in range(max(0, i - CONTEXT_LINES), min(len(lines), i + CONTEXT_LINES + 1)):
                take(j)
    # Then the most recent lines while the budget lasts.
    for i in reversed(range(len(lines))):
        if not take(i):
            break

    out: list[str] = []
    prev = -1
    for i in sorted(keep):
        if i > prev + 1:
            out.append(_omitted(i - prev - 1))
        out.append(lines[i])
        prev = i
    if prev < len(lines) - 1:
        out.append(_omitted(len(lines) - 1 - prev))
    return MemberLogs(service=service, text="\n".join(out), lines_total=len(lines), lines_kept=len(keep),
                      truncated=len(keep) < len(lines))
