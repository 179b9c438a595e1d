"""ScheduledChaosWorkflow: what a schedule starts - one chaos run that honours the per-subject lock.

A Temporal Schedule appends a timestamp to the workflow id of every action, so it cannot start `ChaosDemoWorkflow`
under the fixed per-subject id that makes a manual and a scheduled run exclude each other. This small parent does
it instead: it starts the chaos run as a child under the subject copy's id and, when that id is already running
(someone else is breaking this subject right now), records "skipped: subject busy" and kills nothing.

A chaos run that fails its verdict still completes (the report is its result). For a schedule created with
pause-on-failure (`inp.pause_on_failure`) this parent fails instead, so Temporal's pause-on-failure policy sees it.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy


with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        SCHEDULED_WORKFLOW_NAME,
        WORKFLOW_TASK_TIMEOUT,
        ChaosInput,
        ChaosReport,
        ErrorType,
        ScheduledRunResult,
        bad_input,
        report_of_failure,
    )
    from durable_chaos.ids import run_workflow_id
    from workflows.chaos import ChaosDemoWorkflow

@workflow.defn(name=SCHEDULED_WORKFLOW_NAME)
class ScheduledChaosWorkflow:
    @workflow.run
    async def run(self, inp: ChaosInput) -> ScheduledRunResult:
        if not inp.subject.project:  # `schedule create` always names it; a schedule made by other means may not
            raise bad_input("a scheduled run needs subject.project (the lock's workflow id)")
        run_id = run_workflow_id(inp.subject.project, inp.subject.host)
        try:
            child = await workflow.start_child_workflow(
                ChaosDemoWorkflow.run,
                inp,
                id=run_id,
                # The chaos run is its own experiment: closing or terminating this parent must not cut it short
                # (its restore has to run to the end).
                parent_close_policy=ParentClosePolicy.ABANDON,
                task_timeout=WORKFLOW_TASK_TIMEOUT,  # as a manual run: resumes fast after a worker crash
                search_attributes=inp.start_attributes(),
                static_summary=f"{inp.summary()} (scheduled by {workflow.info().workflow_id})",
            )
        except WorkflowAlreadyStartedError:
            reason = f"skipped: subject busy (run {run_id} is in progress)"
            workflow.set_current_details(f"**{reason}**")
            return ScheduledRunResult(workflow_id=run_id, started=False, skipped_reason=reason)
        workflow.set_current_details(f"started chaos run **{run_id}** ({child.first_execution_run_id})")
        try:
            report: ChaosReport = await child
        except ChildWorkflowError as err:
            report = report_of_failure(err)  # a fail verdict fails the run: its report is the failure's detail
            if report is None:
                raise
        # A failed verdict fails the firing, which pauses a schedule made with pause-on-failure.
        if report.verdict == "fail" and inp.pause_on_failure:
            raise ApplicationError(
                f"chaos run {run_id} ({child.first_execution_run_id}) failed its verdict: "
                f"{'; '.join(report.reasons) or 'no reason given'}",
                type=ErrorType.VERDICT_FAIL, non_retryable=True)
        return ScheduledRunResult(workflow_id=run_id, started=True, run_id=child.first_execution_run_id,
                                  verdict=report.verdict)
