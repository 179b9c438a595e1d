"""The safety net for runs whose own restore never ran: a guard per fault, and the reaper that sweeps on demand.

Terminating a workflow runs none of its code, so `ChaosDemoWorkflow`'s `finally` cannot help. Right before its
kill, every chaos run starts a `FaultGuardWorkflow` that outlives it (parent close policy ABANDON): it waits for the
run to close and, if the run closed with its fault still injected, restores it. A guard exists only while its run
does, so an idle system runs nothing (a Schedule sweeping every minute put a do-nothing run in the web UI's list
each minute). `FaultReaperWorkflow` is the sweep for what no guard watches (`python starter.py reap`): runs from
before guards, or a guard terminated along with its run. Both check the containers' real state first and are
idempotent: a node already running is reported, not touched.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows import policy
from workflows.chaos.stages import HostWaiting, on_host_until_taken

with workflow.unsafe.imports_passed_through():
    from activities.probes import wait_healthy
    from activities.reaper import find_orphaned_faults, reap_fault, wait_until_run_closes
    from durable_chaos.contracts import (
        GUARD_WORKFLOW_NAME,
        FaultState,
        GuardReport,
        GuardRequest,
        OrphanedFault,
        ReapAction,
        ReapReport,
        ReapRequest,
        WaitHealthyRequest,
    )

REAPER_WORKFLOW = "FaultReaperWorkflow"


async def restore_left_fault(orphan: OrphanedFault, waiting: HostWaiting | None = None) -> ReapAction:
    """Undo the fault a closed run left (unless a newer run holds the subject), then verify the subject is healthy."""
    action = await on_host_until_taken(reap_fault, orphan, orphan.fault.subject, policy.undo(),
                                       f"restore {orphan.fault.target} left by {orphan.workflow_id}", waiting)
    if action.action in ("subject gone", "skipped: subject busy"):  # nothing was restored: nothing to verify
        return action
    try:
        await workflow.execute_activity(
            wait_healthy,
            WaitHealthyRequest(subject=orphan.fault.subject, timeout_s=60, check_timeout_s=1.0),
            **policy.reaper_verify(), **policy.on_host(orphan.fault.subject), summary="verify healthy",
        )
        action.healthy_after = True
    except ActivityError:
        action.healthy_after = False
    return action


class GuardDetails(HostWaiting):
    """The guard's current details while its restore waits for the subject's host to have a worker again."""

    def __init__(self, req: GuardRequest) -> None:
        self.req = req

    def waiting(self, host: str, since) -> None:
        workflow.set_current_details(f"run {self.req.workflow_id} closed with its fault on "
                                     f"**{self.req.fault.target}**: waiting for a worker on host **{host}** to "
                                     f"restore it (none has taken it since {since:%H:%M:%S} UTC)")

    def served(self, host: str) -> None:
        workflow.set_current_details(f"a worker on host {host} is restoring {self.req.fault.target}")


@workflow.defn(name=GUARD_WORKFLOW_NAME)
class FaultGuardWorkflow:
    @workflow.run
    async def run(self, req: GuardRequest) -> GuardReport:
        target = req.fault.target
        workflow.set_current_details(f"watching run **{req.workflow_id}** ({req.run_id}), which injects a "
                                     f"{req.fault.fault} on **{target}**")
        closed = await workflow.execute_activity(
            wait_until_run_closes, req, **policy.guard_watch(), summary=f"wait until {req.workflow_id} closes",
        )
        if closed.fault_state in (FaultState.NONE, FaultState.RESTORED):
            workflow.set_current_details(f"run {closed.status.lower()} with fault state "
                                         f"{closed.fault_state.value}: nothing to restore")
            return GuardReport(run_status=closed.status, fault_state=closed.fault_state)
        action = await restore_left_fault(OrphanedFault(workflow_id=req.workflow_id, run_id=req.run_id,
                                                        status=closed.status, fault=req.fault), GuardDetails(req))
        workflow.set_current_details(f"run {closed.status.lower()} with its fault still injected: "
                                     f"{target} {action.action}")
        return GuardReport(run_status=closed.status, fault_state=closed.fault_state, action=action)


@workflow.defn(name=REAPER_WORKFLOW)
class FaultReaperWorkflow:
    @workflow.run
    async def run(self, req: ReapRequest) -> ReapReport:
        orphans = await workflow.execute_activity(
            find_orphaned_faults, req, **policy.find_orphans(), summary="find closed runs with a fault still injected",
        )
        actions: list[ReapAction] = []
        for orphan in orphans:
            if orphan.busy:
                actions.append(ReapAction(workflow_id=orphan.workflow_id, run_id=orphan.run_id,
                                          target=orphan.fault.target, action="skipped: subject busy"))
                continue
            actions.append(await restore_left_fault(orphan))
        workflow.set_current_details(
            "\n".join(f"- {a.workflow_id}/{a.run_id}: {a.target} {a.action}" for a in actions) or "nothing to reap"
        )
        return ReapReport(found=len(orphans), actions=actions)
