"""FaultReaperWorkflow: the safety net for runs whose own restore never ran.

Terminating a workflow runs none of its code, so `ChaosDemoWorkflow`'s `finally` cannot help. This workflow runs
on a Temporal Schedule (installed by the worker) and restores what such runs left broken, checking the
containers' real state first. It is idempotent: a node already running is reported, not touched.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.probes import wait_healthy
    from activities.reaper import find_orphaned_faults, reap_fault
    from contracts import ReapAction, ReapReport, ReapRequest, WaitHealthyRequest
    from workflows.chaos import HEARTBEAT, RESTORE_RETRY

REAPER_WORKFLOW = "FaultReaperWorkflow"


@workflow.defn(name=REAPER_WORKFLOW)
class FaultReaperWorkflow:
    @workflow.run
    async def run(self, req: ReapRequest) -> ReapReport:
        orphans = await workflow.execute_activity(
            find_orphaned_faults, req, start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=HEARTBEAT,
            summary="find closed runs with a fault still injected",
        )
        actions: list[ReapAction] = []
        for orphan in orphans:
            if orphan.busy:
                actions.append(ReapAction(workflow_id=orphan.workflow_id, run_id=orphan.run_id,
                                          target=orphan.fault.target, action="skipped: subject busy"))
                continue
            action = await workflow.execute_activity(
                reap_fault, orphan, start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=HEARTBEAT,
                retry_policy=RESTORE_RETRY, summary=f"restore {orphan.fault.target} left by {orphan.workflow_id}",
            )
            if action.action in ("subject gone", "skipped: subject busy"):  # nothing was restored: nothing to verify
                actions.append(action)
                continue
            try:
                await workflow.execute_activity(
                    wait_healthy,
                    WaitHealthyRequest(subject=orphan.fault.subject, timeout_s=60, check_timeout_s=1.0),
                    start_to_close_timeout=timedelta(seconds=90), heartbeat_timeout=HEARTBEAT,
                    retry_policy=RetryPolicy(maximum_attempts=1), summary="verify healthy",
                )
                action.healthy_after = True
            except ActivityError:
                action.healthy_after = False
            actions.append(action)
        workflow.set_current_details(
            "\n".join(f"- {a.workflow_id}/{a.run_id}: {a.target} {a.action}" for a in actions) or "nothing to reap"
        )
        return ReapReport(found=len(orphans), actions=actions)
