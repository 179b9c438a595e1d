"""What `schedule list` and `schedule describe` show, and the chaos schedules `stop-all` pauses: the server's
record of each schedule and of its recent firings."""

from __future__ import annotations

from typing import AsyncIterator

from rich.table import Table
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleHandle,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos.cli.common import EXIT_BAD_INPUT, fail
from durable_chaos.contracts import SCHEDULED_WORKFLOW_NAME, ChaosInput, ScheduledRunResult
from durable_chaos.contracts.campaign import CAMPAIGN_WORKFLOW_NAME, CampaignInput, CampaignReport


async def find_schedule(client: Client, schedule_id: str) -> tuple[ScheduleHandle, ScheduleDescription]:
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
    try:
        desc = await client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id).describe()
        campaign = desc.workflow_type == CAMPAIGN_WORKFLOW_NAME  # a campaign schedule fires the campaign itself
        handle = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id,
                                            result_type=CampaignReport if campaign else ScheduledRunResult)
        status = desc.status
        if status == WorkflowExecutionStatus.COMPLETED and campaign:
            report = await handle.result()
            outcome = f"campaign {report.verdict}: {len(report.cells)} cells"
        elif status == WorkflowExecutionStatus.COMPLETED:
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
        if action is None or getattr(action, "workflow", None) not in (SCHEDULED_WORKFLOW_NAME,
                                                                       CAMPAIGN_WORKFLOW_NAME):
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


async def schedules_table(client: Client) -> Table:
    """The chaos schedules, one row each: `schedule list`."""
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
    return table


async def schedule_grid(client: Client, schedule_id: str) -> Table:
    """One schedule: what it runs, when, its state and its recent firings: `schedule describe`."""
    _, desc = await find_schedule(client, schedule_id)
    spec, info = desc.schedule.spec, desc.info
    action = desc.schedule.action
    runs = "-"
    if isinstance(action, ScheduleActionStartWorkflow) and action.args:
        if action.workflow == CAMPAIGN_WORKFLOW_NAME:
            (campaign,) = await client.data_converter.decode(action.args, [CampaignInput])
            runs = (f"campaign {campaign.name}: {len(campaign.cells)} cells, {campaign.parallelism} at once ("
                    + "; ".join(c.key for c in campaign.cells) + ")")
        else:
            runs = (await client.data_converter.decode(action.args, [ChaosInput]))[0].summary()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("schedule", schedule_id)
    grid.add_row("runs", runs)
    grid.add_row("when", f"{await desc.memo_value('cron', '-')} ({spec.time_zone_name or 'UTC'})")
    grid.add_row("overlap", desc.schedule.policy.overlap.name)
    grid.add_row("on failure", on_failure(desc))
    grid.add_row("state", state_text(desc))
    grid.add_row("next runs", ", ".join(f"{t:%Y-%m-%d %H:%M} UTC" for t in info.next_action_times[:3]) or "-")
    grid.add_row("fired", f"{info.num_actions} times ({info.num_actions_skipped_overlap} skipped: overlap)")
    grid.add_row("recent", "\n".join([await _firing(client, a) for a in info.recent_actions[-5:]]) or "-")
    return grid
