"""Asking every member at once for one check, written once for every subject.

With `fail_fast` (see `Session.check`) the check stops at the first certain violation: a polling loop only needs to
know *that* the steady state is broken, and a killed member refuses at once while the survivors of a killed leader
can hang in re-election until the timeout. The result then lists only the members that answered and the
violations seen so far.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TypeVar

from durable_chaos.contracts import CheckResult, MemberHealth

A = TypeVar("A")  # one member's answer, in whatever shape the subject's probe returns
X = TypeVar("X")  # the answer of a check that is not one member's (NATS's acknowledged publish)


def member_violations(members: Iterable[MemberHealth]) -> list[str]:
    """One violation per unhealthy member, in the words every subject uses: "etcd2: unreachable (...)"."""
    return [f"{m.service}: {m.detail}" for m in members if not m.healthy]


# How long a fail-fast check waits for the questions it cancelled before it returns without them.
STRAGGLER_WAIT_S = 0.1


def _retrieved(task: asyncio.Future) -> None:
    """A straggler's end, read so that its exception (if any) is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


async def ask_members(
    at: datetime,
    calls: Iterable[Awaitable[A]],
    health: Callable[[A], MemberHealth],
    fail_fast: bool,
    also: Awaitable[X] | None = None,
    also_violations: Callable[[X], list[str]] = lambda _: [],
) -> tuple[list[A], X | None, dict[str, float]] | CheckResult:
    """Every member's answer (in the order of `calls`), `also`'s, and how long each member took to answer (service
    -> ms, for slow-member detection); or, with `fail_fast`, the failed `CheckResult` as soon as one member is
    unhealthy (`health`) or `also` names a violation (`also_violations`)."""
    began = time.monotonic()
    answered: dict[asyncio.Future, float] = {}

    async def timed(call: Awaitable[A]) -> A:
        # Each member's own time: they are asked at once, so one slow member does not slow the others' figures.
        answer = await call
        answered[asyncio.current_task()] = (time.monotonic() - began) * 1000
        return answer

    tasks = [asyncio.ensure_future(timed(call)) for call in calls]

    def latency() -> dict[str, float]:
        return {health(t.result()).service: round(answered[t], 2) for t in tasks if t.done() and t in answered}

    also_task = asyncio.ensure_future(also) if also is not None else None
    pending: set[asyncio.Future] = {*tasks, *([also_task] if also_task else [])}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not fail_fast:
                continue
            failed = any(not health(t.result()).healthy for t in done if t is not also_task)
            if also_task in done and also_violations(also_task.result()):
                failed = True
            if failed:
                members = [health(t.result()) for t in tasks if t.done()]
                violations = member_violations(members)
                if also_task is not None and also_task.done():
                    violations += also_violations(also_task.result())
                return CheckResult(at=at, ok=False, members=members, violations=violations, latency_ms=latency())
    finally:
        # Left unanswered on a fail-fast return, or when the check itself is cancelled. A question that does not stop
        # at once when cancelled is left to end within its own timeout: waiting for it made a NATS fail-fast check
        # take its whole 5 s although a member had refused after 18 ms (CI, sessions 19 and 22).
        for t in pending:
            t.cancel()
        if pending:
            _, stragglers = await asyncio.wait(pending, timeout=STRAGGLER_WAIT_S)
            for t in stragglers:
                t.add_done_callback(_retrieved)
    return [t.result() for t in tasks], also_task.result() if also_task else None, latency()
