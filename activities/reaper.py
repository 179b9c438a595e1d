"""The guard's and the reaper's eyes and hands: see runs close, find closed runs that left a fault injected, undo it.

A run that is *terminated* (or times out) runs no workflow code, so its `finally` never restores. Its last
search attributes still say `ChaosFaultState="injected"`, which is what we look for.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHistoryEventFilterType
from temporalio.service import RPCError, RPCStatusCode

from activities.docker import off_loop
from activities.faults import inject_fault, restore_now
from durable_chaos.contracts import (
    WORKFLOW_NAME,
    Attr,
    FaultRequest,
    FaultState,
    GuardRequest,
    OrphanedFault,
    ReapAction,
    ReapRequest,
    RunClosed,
)

@activity.defn
async def wait_until_run_closes(req: GuardRequest) -> RunClosed:
    """Returns once the guarded run is closed, however it closed, with the fault state it closed with.

    It waits on the server's long poll for the run's close event (one request open at a time, renewed when the
    server lets it expire), not by describing the run every second: with many runs on one server, a describe per
    guard per second was work for the server the runs had to share."""
    handle = activity.client().get_workflow_handle(req.workflow_id, run_id=req.run_id)
    try:
        async for _ in handle.fetch_history_events(wait_new_event=True, skip_archival=True,
                                                   event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT):
            break  # the close event: the run is closed
        desc = await handle.describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return RunClosed(status="NOT_FOUND", fault_state=None)  # deleted: its fault state is unknown
    # No fault state at all: the run closed before it marked its first fault injected (which it does before the
    # inject is scheduled), e.g. in its countdown, when its guard is already up. Nothing went in.
    state = desc.typed_search_attributes.get(Attr.FAULT_STATE)
    return RunClosed(status=desc.status.name if desc.status else "UNKNOWN",
                     fault_state=FaultState(state) if state else FaultState.NONE)


@activity.defn
async def find_orphaned_faults(req: ReapRequest) -> list[OrphanedFault]:
    client = activity.client()
    since = (datetime.now(timezone.utc) - timedelta(hours=req.lookback_hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = (
        f'WorkflowType="{WORKFLOW_NAME}" AND ChaosFaultState="injected" AND ExecutionStatus!="Running" '
        f'AND TaskQueue="{req.task_queue}" AND CloseTime>"{since}"'
    )
    found: list[OrphanedFault] = []
    async for run in client.list_workflows(query):
        # Every fault the run injected: undoing one it had undone already finds nothing to do (undo is idempotent).
        # None at all: it closed between arming the guard and scheduling the inject.
        busy = await _newer_run_holds_the_subject(run.id, run.run_id)
        found += [OrphanedFault(workflow_id=run.id, run_id=run.run_id,
                                status=run.status.name if run.status else "UNKNOWN", fault=fault, busy=busy)
                  for fault in await _injected_faults(client.get_workflow_handle(run.id, run_id=run.run_id))]
    return found


async def _injected_faults(handle) -> list[FaultRequest]:
    """Exactly what the run asked to inject (every member, the parameters, the tag), from its inject activities'
    inputs in its history: the search attributes hold only the first target."""
    faults: dict[str, FaultRequest] = {}  # by tag: a retried inject is one fault
    async for event in handle.fetch_history_events():
        scheduled = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes") and scheduled.activity_type.name == inject_fault.__name__:
            (fault,) = await activity.client().data_converter.decode(scheduled.input.payloads, [FaultRequest])
            faults.setdefault(fault.tag, fault)
    return list(faults.values())


async def _newer_run_holds_the_subject(workflow_id: str, run_id: str) -> bool:
    """The workflow id is the subject's lock: if a newer run holds it, that run owns the node now."""
    latest = await activity.client().get_workflow_handle(workflow_id).describe()
    return latest.run_id != run_id and latest.status == WorkflowExecutionStatus.RUNNING


@activity.defn
async def reap_fault(orphan: OrphanedFault) -> ReapAction:
    def action(what: str) -> ReapAction:
        return ReapAction(workflow_id=orphan.workflow_id, run_id=orphan.run_id, target=orphan.fault.target,
                          action=what)

    # Asked again right before touching Docker: a run may have taken the subject since the search, and its
    # fault is its own to undo.
    if await _newer_run_holds_the_subject(orphan.workflow_id, orphan.run_id):
        return action("skipped: subject busy")
    result = await off_loop(restore_now, orphan.fault)
    if result.container_gone:  # the subject copy was torn down since: nothing left to restore
        return action("subject gone")
    return action("already healthy" if result.already_up else "restored")
