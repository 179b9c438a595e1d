"""A worker that shuts down gracefully (Ctrl-C, SIGTERM, a deploy) hands the activities that only watch or read back
to the server at once, so another worker starts them again, instead of holding them for its graceful period.

Without this, the SDK lets every running activity go on for `graceful_shutdown_timeout` (5 s) and then fails it
with "did not complete in time", and only that failure is retried: a detection or a guard's watch, which would have
run for minutes, resumed elsewhere only after those 5 s (measured: 5.11 s; handed back, 0.11 s). An activity that
changes a subject or writes a record (inject, restore, a load window) is not handed back: it finishes within the
graceful period, since a retry of a half-done change is what the guarantees are about. Which activities are handed
back is the activities' own list (`activities.registry.HANDED_BACK`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

HANDED_BACK_MESSAGE = "this worker is shutting down: handed back, to run again on another worker"


class _HandingBack(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, names: frozenset[str]):
        super().__init__(next)
        self._names = names

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().activity_type not in self._names:
            return await super().execute_activity(input)
        work = asyncio.ensure_future(super().execute_activity(input))
        shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
        try:
            await asyncio.wait({work, shutdown}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            shutdown.cancel()
            if not work.done():  # shutting down, or this activity itself was cancelled
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # what it raises once cancelled is moot
                    await work
        if work.cancelled():
            # Benign: routine for a worker that stops, so the SDK logs it at debug level (not a warning with a
            # traceback per activity) and its metrics do not count it as a failure. It is retried all the same.
            raise ApplicationError(HANDED_BACK_MESSAGE, type="WorkerShutdown", category=ApplicationErrorCategory.BENIGN)
        return work.result()


class HandBack(Interceptor):
    def __init__(self, activity_names: Iterable[str]):
        self._names = frozenset(activity_names)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HandingBack(next, self._names)
