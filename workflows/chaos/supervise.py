"""Supervision: the experiment runs as a task; this cuts it short on abort, at the fault deadline or when a stop
condition trips, and runs the compensation to the end even when the run itself is cancelled meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.chaos.state import Record

T = TypeVar("T")

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import FaultState, Progress
    from durable_chaos.wording import trip_reason


async def supervise(experiment: asyncio.Task, progress: Progress, record: Record,
                    aborted: Callable[[], str | None]) -> str | None:
    """Wait for the experiment; returns why it was cut short (None when it ended on its own)."""
    while True:
        deadline = progress.fault_deadline
        timeout = None if deadline is None else max(0.0, (deadline - workflow.now()).total_seconds())
        try:
            # Also wake when the deadline gets armed (at inject) so the timeout starts counting then.
            await workflow.wait_condition(
                lambda: experiment.done() or aborted() is not None or record.trip is not None
                or progress.fault_deadline != deadline,
                timeout=timeout,
                timeout_summary="fault deadline",
            )
        except asyncio.TimeoutError:
            # The run's deadline is the earliest of its open faults' (steps.py arms it): name that fault's limit.
            max_fault_s = next(f.max_fault_s for f in record.open_faults() if f.deadline == deadline)
            if before_detection(progress, record):
                return f"fault deadline ({max_fault_s:g}s) reached before detection: restoring now"
            return (f"fault deadline ({max_fault_s:g}s) reached during {progress.stage.value}: "
                    f"stage cancelled, restoring now")
        if record.trip is not None and not experiment.done():
            if progress.fault_state == FaultState.NONE:
                return f"{trip_reason(record.trip)}: before the fault, nothing injected"
            return f"{trip_reason(record.trip)}: restoring now"
        if experiment.done():
            return None
        if aborted() is not None:
            if before_detection(progress, record):
                return f"aborted before detection: {aborted()}"
            return f"aborted during {progress.stage.value}: {aborted()}"


def before_detection(progress: Progress, record: Record) -> bool:
    """The fault is on and detection has not concluded. Held at the detect gate the stage still reads `inject`,
    so the stage name alone would tell the reader the wrong story."""
    return progress.fault_state == FaultState.INJECTED and any(f.detection is None for f in record.open_faults())


class compensation:  # lower case: read as `async with compensation(...)`
    """`async with compensation(start):` runs `start()` to completion however the block ends: on its own, on an
    exception, at a cut, or cancelled (then shielded: see `shielded`).

    Except when the block ends in GeneratorExit. That is not an ending of the run: a worker that stopped, or that
    dropped the run without evicting it, left it suspended, and the garbage collector is closing its coroutine -
    on whatever thread and event loop run at that moment. A task started then would land on that loop, which may
    be another run's: its workflow calls would become that run's commands (in CI one restored a member the other
    run never faulted). The dropped run is compensated where it is replayed, or by its fault guard."""

    def __init__(self, start: Callable[[], Awaitable[None]]) -> None:
        self.start = start

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, *_) -> bool:
        if kind is not GeneratorExit:
            await shielded(self.start)
        return False  # whatever ended the block goes on


async def shielded(start: Callable[[], Awaitable[T]]) -> T:
    """Run `start()` to completion even if the run is cancelled meanwhile; then let the cancellation through.

    Without this, a cancel that arrives while restore is in flight would cancel the restore itself.
    """
    coro = start()
    try:
        task = asyncio.create_task(coro)
    except BaseException:
        # A run being evicted from the worker's cache (cancelled by the SDK, which then refuses new tasks): close
        # the coroutine, or Python warns that it was never awaited.
        coro.close()
        raise
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
    return result


async def stop(task: asyncio.Task, progress: Progress, record: Record) -> None:
    """Cancel a task and wait until it has stopped. A bug in it must not stop the compensation: it is recorded
    as a reason and the restore goes on."""
    if not task.done():
        task.cancel()
    try:
        await task
    except (asyncio.CancelledError, ActivityError):
        pass
    except Exception as err:
        record.internal_error = True
        record.reasons.append(f"internal error during {progress.stage.value}: {err!r}")
