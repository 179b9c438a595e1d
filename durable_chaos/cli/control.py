"""Commands that steer runs already started: advance, cancel, abort, reap."""

from __future__ import annotations

import asyncio
import uuid

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

from durable_chaos.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_PASS,
    connect_client,
    err_console,
    fail,
    run_url,
    running_run,
    say_cancelled,
    worker_if_needed,
)
from durable_chaos.cli.render import print_report
from durable_chaos.cli.options import REPORT_JSON_OPTION
from durable_chaos.contracts import ReapRequest, final_report
from durable_chaos.runtime.connect import task_queue

RUN_ID = typer.Argument(..., help="Workflow id of the run (the subject copy's project, e.g. chaos-etcd).")


async def _advance(workflow_id: str) -> int:
    from workflows.chaos import ChaosDemoWorkflow  # with its activities: imported on use (start-up)
    client = await connect_client()
    handle, _ = await running_run(client, workflow_id)
    async with worker_if_needed(client, handle):
        try:
            stage = await handle.execute_update(ChaosDemoWorkflow.advance)
        except WorkflowUpdateFailedError as err:  # the validator's refusal: nothing was held
            fail(EXIT_BAD_INPUT, f"run {workflow_id} cannot advance: {err.cause.message if err.cause else err}")
    err_console.print(f"{workflow_id}: released {stage.value}")
    return EXIT_PASS


def advance(workflow_id: str = RUN_ID) -> None:
    """Release the stage an interactive run is holding (what Enter does in its own terminal), from anywhere."""
    raise typer.Exit(asyncio.run(_advance(workflow_id)))


async def _cancel(workflow_id: str) -> int:
    client = await connect_client()
    handle, _ = await running_run(client, workflow_id)
    await handle.cancel()
    err_console.print(f"cancel requested for {workflow_id}: it restores the fault (if injected) and ends")
    async with worker_if_needed(client, handle):
        try:
            await handle.result()
        except Exception:  # a cancelled run ends in a (cancellation) failure: that is the expected outcome
            pass
    desc = await handle.describe()
    if desc.status == WorkflowExecutionStatus.CANCELED:
        return await say_cancelled(handle)
    err_console.print(f"run {workflow_id} ended before the cancel took effect: "
                      f"{desc.status.name if desc.status else '?'}")
    return EXIT_PASS


def cancel(workflow_id: str = RUN_ID) -> None:
    """Cancel a run: its restore still runs, then it ends as cancelled (exit 130)."""
    raise typer.Exit(asyncio.run(_cancel(workflow_id)))


async def _abort(workflow_id: str, reason: str, as_json: bool) -> int:
    from workflows.chaos import ChaosDemoWorkflow  # with its activities: imported on use (start-up)
    client = await connect_client()
    handle, _ = await running_run(client, workflow_id)
    async with worker_if_needed(client, handle):
        progress = await handle.execute_update(ChaosDemoWorkflow.abort, reason)
        err_console.print(f"aborted {workflow_id}: fault state {progress.fault_state.value}")
        report = await final_report(handle)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print_report(Console(), report, run_url(client, handle.id, report.run_id))
    return EXIT_PASS


def abort(
    workflow_id: str = RUN_ID,
    reason: str = typer.Option("aborted by operator", help="Recorded in the report."),
    as_json: bool = REPORT_JSON_OPTION,
) -> None:
    """Restore now and finish the run with its report (the verdict, as `chaos` ends with)."""
    raise typer.Exit(asyncio.run(_abort(workflow_id, reason, as_json)))


async def _reap(lookback_hours: float) -> int:
    from workflows.reaper import FaultReaperWorkflow  # with its activities: imported on use (start-up)
    client = await connect_client()
    queue = task_queue()
    handle = await client.start_workflow(
        FaultReaperWorkflow.run, ReapRequest(task_queue=queue, lookback_hours=lookback_hours),
        id=f"chaos-fault-reaper-now-{uuid.uuid4().hex[:8]}", task_queue=queue,
        static_summary="reap now (starter.py reap)",
    )
    async with worker_if_needed(client, handle):
        report = await handle.result()
    table = Table(title=f"reaper: {report.found} closed run(s) with a fault still recorded as injected")
    for col in ("run", "target", "action", "healthy after"):
        table.add_column(col)
    for a in report.actions:
        table.add_row(f"{a.workflow_id}/{a.run_id}", a.target, a.action,
                      "-" if a.healthy_after is None else str(a.healthy_after))
    err_console.print(table)
    return EXIT_PASS


def reap(lookback_hours: float = typer.Option(24.0, help="Look at runs closed within this many hours.")) -> None:
    """Restore faults left behind by runs that closed without restoring (terminated ones) — now, not on schedule."""
    raise typer.Exit(asyncio.run(_reap(lookback_hours)))
