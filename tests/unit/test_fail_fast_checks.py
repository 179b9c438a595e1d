"""A fail-fast check (subjects/checks.py `ask_members`) returns as soon as one member is unhealthy, even when a
question still out does not stop at once when it is cancelled."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from durable_chaos.contracts import MemberHealth
from subjects.checks import ask_members


async def refuses() -> MemberHealth:
    await asyncio.sleep(0.01)
    return MemberHealth(service="n3", healthy=False, detail="unreachable (connection refused)")


async def slow_to_stop(seconds: float) -> MemberHealth:
    """A question that finishes its own timeout before it gives up, cancelled or not (CI, session 22: a NATS
    fail-fast check took its whole 5 s although a member had refused after 18 ms)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            await asyncio.sleep(end - time.monotonic())
        except asyncio.CancelledError:
            continue
    return MemberHealth(service="n1", healthy=True, detail="ok")


async def test_a_fail_fast_check_does_not_wait_for_a_question_slow_to_stop():
    began = time.monotonic()
    result = await ask_members(datetime.now(timezone.utc), [slow_to_stop(2.0), refuses()], lambda m: m,
                               fail_fast=True)
    took = time.monotonic() - began
    assert not result.ok and result.violations, result
    assert took < 0.5, f"the fail-fast check took {took:.2f} s"
    await asyncio.sleep(2.1)  # the straggler ends by itself, within its own time
