"""The worker's event-loop watchdog names what held the loop, while it is held (runtime/loop_watch.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from durable_chaos.runtime.loop_watch import LoopWatch


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # synchronous work on the loop: what the watch exists to catch


async def test_a_stall_is_logged_with_the_code_that_holds_the_loop(caplog):
    caplog.set_level(logging.WARNING, logger="chaos.worker")
    with LoopWatch(asyncio.get_running_loop(), stall_s=0.3) as watch:
        await asyncio.sleep(0.2)
        hold_the_loop(0.9)
        await asyncio.sleep(0.3)
    assert len(watch.stalls) == 1 and 0.6 < watch.stalls[0] < 1.3, watch.stalls
    stalled = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalled) == 1 and "hold_the_loop" in stalled[0], stalled


async def test_a_busy_but_responsive_loop_is_not_a_stall(caplog):
    caplog.set_level(logging.WARNING, logger="chaos.worker")
    with LoopWatch(asyncio.get_running_loop(), stall_s=0.3) as watch:
        for _ in range(20):
            hold_the_loop(0.05)  # short synchronous steps, as a busy worker takes
            await asyncio.sleep(0)
    assert watch.stalls == [] and not caplog.records
