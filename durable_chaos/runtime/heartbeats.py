"""Every activity heartbeats on a timer while it runs, whatever it is doing.

A heartbeat says one thing here: the worker running this activity is alive. The server retries an activity on
another worker when its heartbeats stop for the heartbeat timeout (workflows/chaos.py HEARTBEAT), so that timeout is
how fast a run resumes after its worker is SIGKILLed. Short timeouts are only safe if heartbeats never depend on the
activity's own progress: a health check waiting out its timeout, a `docker start`, a Claude call or a load window
between two operations would otherwise look dead. So the worker heartbeats for every activity from a task of its
own, and activities do not heartbeat themselves. The same heartbeats carry cancellation to the activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

# Several heartbeats per heartbeat timeout: the SDK sends at most one per throttle interval (runtime/worker.py),
# and the server must see one well inside the timeout even when a send is late. An activity with a longer timeout
# (the guard's watch) beats less often: each heartbeat is a write on the server.
EVERY_S = 0.2
PER_TIMEOUT = 6


def beat_interval(heartbeat_timeout: timedelta | None) -> float:
    return max(EVERY_S, heartbeat_timeout.total_seconds() / PER_TIMEOUT) if heartbeat_timeout else EVERY_S


async def _beat() -> None:
    every = beat_interval(activity.info().heartbeat_timeout)
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)


class _Heartbeating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        beat = asyncio.create_task(_beat())  # inherits the activity's context
        try:
            return await super().execute_activity(input)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


class Heartbeats(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Heartbeating(next)
