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
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.markup import escape
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos.campaign.load import is_campaign_file, load_campaign
from durable_chaos.cli.common import (
    EXIT_BAD_INPUT,
    connect_client,
    err_console,
    fail,
    has_live_worker,
)
from durable_chaos.cli.campaigns import cells_on_default_host
from durable_chaos.cli.experiments import load_or_exit, overrides_or_exit
from durable_chaos.cli.hosts import on_default_host
from durable_chaos.cli.options import (
    HOST_OPTION,
    ABORT_PROBE_OPTION,
    ABORT_QUERY_OPTION,
    COUNT_OPTION,
    COUNTDOWN_OPTION,
    DETECT_ALERT_OPTION,
    DETECT_HTTP_OPTION,
    DETECT_INTERVAL_OPTION,
    DETECT_TIMEOUT_OPTION,
    FAULT_KINDS_EPILOG,
    FAULT_OPTION,
    LOAD_RATE_OPTION,
    MAX_ERROR_RATE_OPTION,
    MAX_FAULT_SECONDS_OPTION,
    MAX_P99_OPTION,
    MAX_UNAVAILABLE_OPTION,
    NOTIFY_OPTION,
    PARAM_OPTION,
    PORT_BASE_OPTION,
    PROJECT_OPTION,
    PROMETHEUS_OPTION,
    QUORUM_OPTION,
    SUBJECT_OPTION,
    TARGET_OPTION,
)
from durable_chaos.cli.run_input import chaos_input, guardrails
from durable_chaos.cli.schedule_views import (
    find_schedule,
    schedule_grid,
    schedules_table,
)
from durable_chaos.contracts import WORKFLOW_TASK_TIMEOUT, Attr, ChaosInput
from durable_chaos.contracts.campaign import CampaignInput
from durable_chaos.experiment.load import BadExperiment
from durable_chaos.runtime.connect import task_queue
from subjects import resolve

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


def _run_action(schedule_id: str, inp: ChaosInput) -> ScheduleActionStartWorkflow:
    from workflows.scheduled import ScheduledChaosWorkflow  # with its activities: imported on use (start-up)
    return ScheduleActionStartWorkflow(
        ScheduledChaosWorkflow.run,
        inp,
        id=schedule_id,  # Temporal appends the fire time: "<schedule id>-2026-01-01T03:00:00Z"
        task_queue=task_queue(),
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        typed_search_attributes=inp.start_attributes(),
        static_summary=f"scheduled: {inp.summary()}",
    )


def _campaign_action(schedule_id: str, inp: CampaignInput) -> ScheduleActionStartWorkflow:
    # The campaign itself is the action: its cells are its children, and its runs find each other for the
    # scorecard by name (ChaosCampaign), whatever the fire time appended to their ids.
    from workflows.campaign import ChaosCampaignWorkflow  # with its activities: imported on use (start-up)
    return ScheduleActionStartWorkflow(
        ChaosCampaignWorkflow.run, inp, id=schedule_id, task_queue=task_queue(), task_timeout=WORKFLOW_TASK_TIMEOUT,
        typed_search_attributes=TypedSearchAttributes([SearchAttributePair(Attr.CAMPAIGN, inp.name)]),
        static_summary=f"scheduled: {campaign_summary(inp)}")


def campaign_summary(inp: CampaignInput) -> str:
    return f"campaign {inp.name}: {len(inp.cells)} cells, {inp.parallelism} at once"


async def _create(schedule_id: str, action: ScheduleActionStartWorkflow, summary: str, cron: str, timezone: str,
                  paused: bool, pause_on_failure: bool) -> None:
    client = await connect_client()
    schedule = Schedule(
        action=action,
        spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW,
                              pause_on_failure=pause_on_failure),
        state=ScheduleState(paused=paused, note=f"created by starter.py: {summary}"),
    )
    try:
        # The server keeps the spec as calendars; the memo keeps the cron line as the user wrote it, for display.
        await client.create_schedule(schedule_id, schedule, search_attributes=action.typed_search_attributes,
                                     memo={"cron": cron})
    except ScheduleAlreadyRunningError:
        fail(EXIT_BAD_INPUT, f"schedule {schedule_id!r} already exists (delete it first, or pick another --id)")
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            fail(EXIT_BAD_INPUT, f"the server refused the schedule: {err.message}")
        raise
    console.print(f"schedule [bold]{schedule_id}[/]: {summary} at '{cron}' ({timezone})"
                  f"{', paused' if paused else ''}{', pauses on a failed run' if pause_on_failure else ''}"
                  f"; runs need a worker (python worker.py) on task queue "
                  f"{task_queue()!r}", highlight=False)


def _refuse_run_options(ctx: typer.Context) -> None:
    """A run option given beside --file would be silently dropped, so it is refused."""
    given = [f"--{name.replace('_', '-')}" for name in RUN_OPTIONS
             if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"]
    if given:
        fail(EXIT_BAD_INPUT, f"--file says what to run: drop {', '.join(given)} (or set it in the file)")


def _from_file(ctx: typer.Context, file: Path, sets: list[str] | None, project: str | None,
               port_base: int | None) -> ChaosInput:
    """The file says what to run."""
    _refuse_run_options(ctx)
    return load_or_exit(file, sets, project, port_base).run_input


def _campaign_from_file(ctx: typer.Context, file: Path, sets: list[str] | None, project: str | None,
                        port_base: int | None) -> CampaignInput:
    """A campaign file: every cell checked now, and the cells (not the file's path) stored in the schedule."""
    _refuse_run_options(ctx)
    try:
        return cells_on_default_host(load_campaign(file, overrides_or_exit(sets), project=project,
                                              port_base=port_base).input)
    except BadExperiment as err:
        fail(EXIT_BAD_INPUT, escape(str(err)))


# The options that say what a run does; an experiment file (--file) says all of that itself.
RUN_OPTIONS = ("subject", "fault", "param", "target", "count", "allow_quorum_loss", "max_error_rate", "max_p99_ms",
               "max_unavailable_s", "abort_probe", "abort_query", "prometheus", "detect_alert", "detect_http",
               "countdown", "detect_timeout", "detect_interval", "max_fault_seconds", "load_rate", "notify")


@app.command(epilog=FAULT_KINDS_EPILOG)
def create(
    ctx: typer.Context,
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
    host: Optional[str] = HOST_OPTION,
    port_base: Optional[int] = PORT_BASE_OPTION,
    countdown: int = COUNTDOWN_OPTION,
    detect_timeout: Optional[float] = DETECT_TIMEOUT_OPTION,
    detect_interval: float = DETECT_INTERVAL_OPTION,
    max_fault_seconds: float = MAX_FAULT_SECONDS_OPTION,
    load_rate: float = LOAD_RATE_OPTION,
    paused: bool = typer.Option(False, "--paused", help="Create it paused."),
    pause_on_failure: bool = typer.Option(
        False, "--pause-on-failure",
        help="Pause the schedule when a run fails (verdict fail or an error), so no further run starts until "
             "someone has looked and unpaused it (`schedule unpause ID`)."),
    notify: Optional[str] = NOTIFY_OPTION,
    file: Optional[Path] = typer.Option(
        None, "--file", metavar="FILE",
        help="Run this experiment file, or campaign file, instead of the run options above. Its content is stored "
             "in the schedule: editing the file later changes nothing until the schedule is made again."),
    sets: Optional[list[str]] = typer.Option(None, "--set", metavar="NAME=VALUE",
                                             help="With --file: override a variable the file declares."),
) -> None:
    """Run chaos on a schedule (default every night at 03:00 UTC). A run is skipped while the subject is busy."""
    _check_timezone(timezone)
    if file is not None and is_campaign_file(file):
        campaign = _campaign_from_file(ctx, file, sets, project, port_base)
        asyncio.run(_create(schedule_id or f"nightly-{campaign.name}", _campaign_action(
            schedule_id or f"nightly-{campaign.name}", campaign), campaign_summary(campaign), cron, timezone, paused,
            pause_on_failure))
        return
    if file is not None:
        inp = _from_file(ctx, file, sets, project, port_base)
    elif sets:
        fail(EXIT_BAD_INPUT, "--set overrides a variable of an experiment file: give --file too")
    else:
        inp = chaos_input(subject, target, detect_timeout, detect_interval, countdown, project, port_base,
                          max_fault_seconds, load_rate=load_rate, fault=fault, params=param, count=count,
                          allow_quorum_loss=allow_quorum_loss,
                          guards=guardrails(max_error_rate, max_p99_ms, max_unavailable_s, abort_probe, abort_query,
                                            prometheus, detect_alert, detect_http),
                          notify=notify, host=host)
    inp = on_default_host(inp)
    # Named here, not in the workflow: the project is the workflow id that locks the subject copy.
    inp.subject.project = resolve(inp.subject).project
    inp.pause_on_failure = pause_on_failure
    schedule_id = schedule_id or f"nightly-{inp.subject.project}"
    asyncio.run(_create(schedule_id, _run_action(schedule_id, inp), inp.summary(), cron, timezone, paused,
                        pause_on_failure))


async def _list() -> None:
    console.print(await schedules_table(await connect_client()))


@app.command("list")
def list_schedules() -> None:
    """The chaos schedules on this server."""
    asyncio.run(_list())


async def _describe(schedule_id: str) -> None:
    client = await connect_client()
    console.print(await schedule_grid(client, schedule_id))


@app.command()
def describe(schedule_id: str = typer.Argument(..., help="Schedule id.")) -> None:
    """A schedule: what it runs, when, its state and its recent runs."""
    asyncio.run(_describe(schedule_id))


async def _act(schedule_id: str, what: str, note: str | None = None) -> None:
    client = await connect_client()
    handle, desc = await find_schedule(client, schedule_id)
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
