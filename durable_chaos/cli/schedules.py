"""`starter.py schedule ...`: nightly chaos runs as Temporal Schedules.

Each firing starts a `ScheduledChaosWorkflow`, which starts the chaos run under the subject copy's fixed workflow
id - the same lock a manual run takes - so a schedule never breaks a subject someone else is already breaking. The
schedule's own overlap policy is SKIP as well. Scheduled runs carry the same Chaos* search attributes as manual
ones: `list`, the web UI and `temporal workflow list --query` find them alike. A worker (`python worker.py`) must
be running for a schedule's runs to happen.

With `--pause-on-failure` a firing whose run fails its verdict fails too (see workflows/scheduled.py), and Temporal's
pause-on-failure policy pauses the schedule until someone unpauses it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import AsyncIterator, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos.cli.common import EXIT_BAD_INPUT, connect_client, err_console, fail, has_live_worker
from durable_chaos.cli.options import (
    ABORT_PROBE_OPTION,
    ABORT_QUERY_OPTION,
    COUNT_OPTION,
    DETECT_ALERT_OPTION,
    DETECT_HTTP_OPTION,
    DETECT_INTERVAL_OPTION,
    FAULT_KINDS_EPILOG,
    FAULT_OPTION,
    LOAD_RATE_OPTION,
    MAX_ERROR_RATE_OPTION,
    MAX_FAULT_SECONDS_OPTION,
    MAX_P99_OPTION,
    MAX_UNAVAILABLE_OPTION,
    NOTIFY_OPTION,
    PARAM_OPTION,
    PROJECT_OPTION,
    PROMETHEUS_OPTION,
    QUORUM_OPTION,
    SUBJECT_OPTION,
    TARGET_OPTION,
)
from durable_chaos.cli.run_input import chaos_input, guardrails
from durable_chaos.contracts import (
    SCHEDULED_WORKFLOW_NAME,
    WORKFLOW_TASK_TIMEOUT,
    ChaosInput,
    ScheduledRunResult,
)
from durable_chaos.runtime.connect import task_queue
from subjects import resolve
from workflows.scheduled import ScheduledChaosWorkflow

app = typer.Typer(help="Nightly (or any cron) chaos runs as Temporal Schedules.", no_args_is_help=True,
                  rich_markup_mode=None)  # plain help, as the top-level app (cli/app.py says why)
console = Console()

# A night missed while the server was down is skipped, not run at lunchtime the next day.
CATCHUP_WINDOW = timedelta(hours=1)


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fail(EXIT_BAD_INPUT, f"unknown --timezone {name!r} (an IANA name such as UTC or Europe/Berlin)")


async def _handle(client: Client, schedule_id: str) -> tuple[ScheduleHandle, ScheduleDescription]:
    """A handle on one of our schedules and its description; exit 2 with one line when there is none by that id."""
    handle = client.get_schedule_handle(schedule_id)
    try:
        return handle, await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            fail(EXIT_BAD_INPUT, f"no schedule {schedule_id!r} (see `starter.py schedule list`)")
        raise


async def _firing(client: Client, fired: ScheduleActionResult) -> str:
    """One firing and what came of it: the ScheduledChaosWorkflow's result says whether it ran or skipped."""
    action = fired.action
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return f"{fired.started_at:%Y-%m-%d %H:%M:%S}"
    handle = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id,
                                        result_type=ScheduledRunResult)
    try:
        status = (await handle.describe()).status
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            outcome = (f"ran {result.workflow_id}: {result.verdict or 'no verdict'}" if result.started
                       else result.skipped_reason or "skipped")
        elif status == WorkflowExecutionStatus.FAILED:  # e.g. a fail verdict under pause-on-failure: say why
            try:
                await handle.result()
                outcome = "failed"
            except WorkflowFailureError as err:
                outcome = f"failed: {err.cause.message if err.cause else err}"
        else:
            outcome = status.name.lower() if status else "?"
    except RPCError:  # the firing's workflow is gone (retention): only the time is left
        outcome = "-"
    return f"{fired.started_at:%Y-%m-%d %H:%M:%S} {outcome}"


async def chaos_schedules(client: Client, queue: str | None = None) -> AsyncIterator[
        tuple[ScheduleHandle, ScheduleDescription]]:
    """The chaos schedules (those `schedule create` makes) in the namespace, described; only those starting their
    runs on `queue` when given. A schedule deleted between the listing and its description is left out."""
    async for entry in await client.list_schedules():
        action = entry.schedule.action if entry.schedule else None
        if action is None or getattr(action, "workflow", None) != SCHEDULED_WORKFLOW_NAME:
            continue  # someone else's schedule in this namespace
        handle = client.get_schedule_handle(entry.id)
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                continue
            raise
        if queue is None or getattr(desc.schedule.action, "task_queue", None) == queue:
            yield handle, desc


def on_failure(desc: ScheduleDescription) -> str:
    return "pause" if desc.schedule.policy.pause_on_failure else "keep firing"


def state_text(desc: ScheduleDescription) -> str:
    """"active", or "paused" with the note saying who paused it and why (stop-all, a failed run, a user)."""
    state = desc.schedule.state
    return ("paused" if state.paused else "active") + (f" - {state.note}" if state.note else "")


async def _create(schedule_id: str, inp: ChaosInput, cron: str, timezone: str, paused: bool) -> None:
    client = await connect_client()
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledChaosWorkflow.run,
            inp,
            id=schedule_id,  # Temporal appends the fire time: "<schedule id>-2026-01-01T03:00:00Z"
            task_queue=task_queue(),
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            typed_search_attributes=inp.start_attributes(),
            static_summary=f"scheduled: {inp.summary()}",
        ),
        spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW,
                              pause_on_failure=inp.pause_on_failure),
        state=ScheduleState(paused=paused, note=f"created by starter.py: {inp.summary()}"),
    )
    try:
        # The server keeps the spec as calendars; the memo keeps the cron line as the user wrote it, for display.
        await client.create_schedule(schedule_id, schedule, search_attributes=inp.start_attributes(),
                                     memo={"cron": cron})
    except ScheduleAlreadyRunningError:
        fail(EXIT_BAD_INPUT, f"schedule {schedule_id!r} already exists (delete it first, or pick another --id)")
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            fail(EXIT_BAD_INPUT, f"the server refused the schedule: {err.message}")
        raise
    console.print(f"schedule [bold]{schedule_id}[/]: {inp.summary()} at '{cron}' ({timezone})"
                  f"{', paused' if paused else ''}{', pauses on a failed run' if inp.pause_on_failure else ''}"
                  f"; runs need a worker (python worker.py) on task queue "
                  f"{task_queue()!r}", highlight=False)


@app.command(epilog=FAULT_KINDS_EPILOG)
def create(
    schedule_id: Optional[str] = typer.Option(None, "--id", help="Schedule id (default nightly-<project>)."),
    cron: str = typer.Option("0 3 * * *", help="When to run, as a cron expression."),
    timezone: str = typer.Option("UTC", help="IANA time zone the cron expression is read in."),
    subject: str = SUBJECT_OPTION,
    fault: str = FAULT_OPTION,
    param: Optional[list[str]] = PARAM_OPTION,
    target: Optional[str] = TARGET_OPTION,
    count: int = COUNT_OPTION,
    allow_quorum_loss: bool = QUORUM_OPTION,
    max_error_rate: Optional[float] = MAX_ERROR_RATE_OPTION,
    max_p99_ms: Optional[float] = MAX_P99_OPTION,
    max_unavailable_s: Optional[float] = MAX_UNAVAILABLE_OPTION,
    abort_probe: Optional[str] = ABORT_PROBE_OPTION,
    abort_query: Optional[str] = ABORT_QUERY_OPTION,
    prometheus: Optional[str] = PROMETHEUS_OPTION,
    detect_alert: Optional[list[str]] = DETECT_ALERT_OPTION,
    detect_http: Optional[list[str]] = DETECT_HTTP_OPTION,
    project: Optional[str] = PROJECT_OPTION,
    port_base: Optional[int] = typer.Option(None, help="First host port of the subject copy."),
    countdown: int = typer.Option(3, help="Seconds of countdown before the fault."),
    detect_timeout: Optional[float] = typer.Option(None, help="Seconds to wait for detection (default: the subject's)."),
    detect_interval: float = DETECT_INTERVAL_OPTION,
    max_fault_seconds: float = MAX_FAULT_SECONDS_OPTION,
    load_rate: float = LOAD_RATE_OPTION,
    paused: bool = typer.Option(False, "--paused", help="Create it paused."),
    pause_on_failure: bool = typer.Option(
        False, "--pause-on-failure",
        help="Pause the schedule when a run fails (verdict fail or an error), so no further run starts until "
             "someone has looked and unpaused it (`schedule unpause ID`)."),
    notify: Optional[str] = NOTIFY_OPTION,
) -> None:
    """Run chaos on a schedule (default every night at 03:00 UTC). A run is skipped while the subject is busy."""
    _check_timezone(timezone)
    inp = chaos_input(subject, target, detect_timeout, detect_interval, countdown, project, port_base,
                      max_fault_seconds, load_rate=load_rate, fault=fault, params=param, count=count,
                      allow_quorum_loss=allow_quorum_loss,
                      guards=guardrails(max_error_rate, max_p99_ms, max_unavailable_s, abort_probe, abort_query,
                                        prometheus, detect_alert, detect_http),
                      notify=notify)
    # Named here, not in the workflow: the project is the workflow id that locks the subject copy.
    inp.subject.project = resolve(inp.subject).project
    inp.pause_on_failure = pause_on_failure
    asyncio.run(_create(schedule_id or f"nightly-{inp.subject.project}", inp, cron, timezone, paused))


async def _list() -> None:
    client = await connect_client()
    table = Table(title="chaos schedules", title_justify="left")
    for column in ("id", "cron", "time zone", "state", "on failure", "next run", "last firing"):
        # A pause note or a failed firing can carry a run's every reason: one line each here, `describe` has it all.
        long = column in ("state", "last firing")
        table.add_column(column, no_wrap=long, overflow="ellipsis", max_width=48 if long else None)
    async for handle, desc in chaos_schedules(client):
        info = desc.info
        table.add_row(handle.id, (await desc.memo_value("cron", "-")), desc.schedule.spec.time_zone_name or "UTC",
                      state_text(desc), on_failure(desc),
                      f"{info.next_action_times[0]:%Y-%m-%d %H:%M} UTC" if info.next_action_times else "-",
                      await _firing(client, info.recent_actions[-1]) if info.recent_actions else "-")
    console.print(table)


@app.command("list")
def list_schedules() -> None:
    """The chaos schedules on this server."""
    asyncio.run(_list())


async def _describe(schedule_id: str) -> None:
    client = await connect_client()
    _, desc = await _handle(client, schedule_id)
    spec, info = desc.schedule.spec, desc.info
    action = desc.schedule.action
    inp = await client.data_converter.decode(action.args, [ChaosInput]) if isinstance(
        action, ScheduleActionStartWorkflow) and action.args else None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("schedule", schedule_id)
    grid.add_row("runs", inp[0].summary() if inp else "-")
    grid.add_row("when", f"{await desc.memo_value('cron', '-')} ({spec.time_zone_name or 'UTC'})")
    grid.add_row("overlap", desc.schedule.policy.overlap.name)
    grid.add_row("on failure", on_failure(desc))
    grid.add_row("state", state_text(desc))
    grid.add_row("next runs", ", ".join(f"{t:%Y-%m-%d %H:%M} UTC" for t in info.next_action_times[:3]) or "-")
    grid.add_row("fired", f"{info.num_actions} times ({info.num_actions_skipped_overlap} skipped: overlap)")
    grid.add_row("recent", "\n".join([await _firing(client, a) for a in info.recent_actions[-5:]]) or "-")
    console.print(grid)


@app.command()
def describe(schedule_id: str = typer.Argument(..., help="Schedule id.")) -> None:
    """A schedule: what it runs, when, its state and its recent runs."""
    asyncio.run(_describe(schedule_id))


async def _act(schedule_id: str, what: str, note: str | None = None) -> None:
    client = await connect_client()
    handle, desc = await _handle(client, schedule_id)
    if what == "trigger":
        await handle.trigger()  # the schedule's overlap policy (SKIP) applies to a manual trigger too
        queue = getattr(desc.schedule.action, "task_queue", None) or task_queue()
        if not await has_live_worker(client, queue):
            err_console.print(f"no worker is polling task queue {queue!r}: the firing waits until one does "
                              f"(start one with `python worker.py`)", style="yellow", highlight=False, soft_wrap=True)
    elif what == "pause":
        await handle.pause(note=note)
    elif what == "unpause":
        await handle.unpause(note=note)
    else:
        await handle.delete()
    console.print(f"schedule {schedule_id}: {what}{'d' if what.endswith('e') else 'ed'}", highlight=False)


@app.command()
def trigger(schedule_id: str = typer.Argument(..., help="Schedule id.")) -> None:
    """Fire a schedule now (skipped if its subject is busy)."""
    asyncio.run(_act(schedule_id, "trigger"))


@app.command()
def pause(schedule_id: str = typer.Argument(..., help="Schedule id."),
          note: Optional[str] = typer.Option(None, help="Why (shown in describe and the web UI).")) -> None:
    """Stop a schedule from firing until unpaused."""
    asyncio.run(_act(schedule_id, "pause", note))


@app.command()
def unpause(schedule_id: str = typer.Argument(..., help="Schedule id."),
            note: Optional[str] = typer.Option(None, help="Why (shown in describe and the web UI).")) -> None:
    """Let a paused schedule fire again."""
    asyncio.run(_act(schedule_id, "unpause", note))


@app.command()
def delete(schedule_id: str = typer.Argument(..., help="Schedule id.")) -> None:
    """Delete a schedule (runs it already started go on)."""
    asyncio.run(_act(schedule_id, "delete"))
