"""ChaosCampaignWorkflow: one experiment over a matrix, one chaos run (a `ChaosDemoWorkflow` child) per cell.

    cells, in order ─► at most `parallelism` children at once, never two on one subject copy
                   ─► each child's report becomes its cell ─► scorecard against the previous run ─► report

Why children and not activities: each cell is a whole chaos run with its own compensation, guard, history and web
UI page; the campaign only sequences them. A child's workflow id is its subject copy's project, as for a manual run,
so Temporal's id-conflict rule keeps a campaign cell and anyone else's run off the same copy at the same time.

Cancelling the campaign cancels its running children and waits until each has restored its fault (a child's
`finally` undoes it), then the campaign ends cancelled. Workflow code is deterministic: cells start in matrix order,
decisions come only from recorded child results.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

from workflows import policy

with workflow.unsafe.imports_passed_through():
    from activities.campaign import previous_campaign_report
    from durable_chaos.campaign.scorecard import compare, failing_first
    from durable_chaos.contracts import WORKFLOW_TASK_TIMEOUT, Attr, ChaosReport, report_of_failure
    from durable_chaos.contracts.campaign import (
        CAMPAIGN_WORKFLOW_NAME,
        CampaignCell,
        CampaignInput,
        CampaignProgress,
        CampaignReport,
        CellResult,
        PreviousCampaignRequest,
        Scorecard,
    )
    from workflows.chaos import ChaosDemoWorkflow


@workflow.defn(name=CAMPAIGN_WORKFLOW_NAME)
class ChaosCampaignWorkflow:
    def __init__(self) -> None:
        self.view = CampaignProgress()

    @workflow.query
    def progress(self) -> CampaignProgress:
        return self.view

    @workflow.run
    async def run(self, inp: CampaignInput) -> CampaignReport:
        v = self.view
        v.campaign, v.parallelism, v.started_at = inp.name, inp.parallelism, workflow.now()
        workflow.upsert_search_attributes([Attr.CAMPAIGN.value_set(inp.name)])  # the scorecard finds runs by it
        v.cells = [CellResult.of(c) for c in inp.cells]
        self._details()
        running: dict[int, asyncio.Task] = {}
        pending = list(range(len(inp.cells)))
        try:
            while pending or running:
                self._start_what_fits(inp, pending, running)
                await workflow.wait_condition(lambda: any(t.done() for t in running.values()))
                for i in [i for i, t in running.items() if t.done()]:
                    del running[i]
        except asyncio.CancelledError:
            # Cancel what runs and wait for it: each child undoes its fault in its `finally` before it closes, and
            # the campaign must not claim to be over while a fault is still in.
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
            for i in pending:
                v.cells[i].state = "cancelled"
            self._details()
            raise
        info = workflow.info()
        scorecard = await self._scorecard(info)
        return CampaignReport(campaign=inp.name, workflow_id=info.workflow_id, run_id=info.run_id,
                              task_queue=info.task_queue, parallelism=inp.parallelism, started_at=v.started_at,
                              finished_at=workflow.now(), cells=v.cells, scorecard=scorecard)

    def _start_what_fits(self, inp: CampaignInput, pending: list[int], running: dict[int, asyncio.Task]) -> None:
        """In matrix order, start every pending cell that fits: a free slot, and its subject copy not busy (a copy
        can hold only one run; its later cells wait while other copies' cells go ahead)."""
        busy = {inp.cells[i].run_id for i in running}
        for i in list(pending):
            if len(running) >= inp.parallelism:
                return
            if inp.cells[i].run_id in busy:
                continue
            pending.remove(i)
            busy.add(inp.cells[i].run_id)
            running[i] = asyncio.create_task(self._run_cell(inp.cells[i], self.view.cells[i]))

    async def _run_cell(self, cell: CampaignCell, out: CellResult) -> None:
        out.state, out.started_at = "running", workflow.now()
        self._details()
        try:
            child = await workflow.start_child_workflow(
                ChaosDemoWorkflow.run,
                cell.run_input,
                id=cell.run_id,  # the per-subject lock, as a manual run's
                task_timeout=WORKFLOW_TASK_TIMEOUT,
                search_attributes=cell.run_input.start_attributes(),
                static_summary=f"{cell.key} (campaign {workflow.info().workflow_id})",
                # A terminated campaign runs no code: the server then asks each child to cancel, and the child
                # restores its fault itself (as it would if the campaign were cancelled).
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            )
            out.workflow_id, out.run_id = child.id, child.first_execution_run_id
            self._details()
            try:
                report = await child
            except ChildWorkflowError as err:
                report = report_of_failure(err)  # a fail verdict fails the run: its report is the failure's detail
                if report is None:
                    raise
            self._fill(out, report)
        except WorkflowAlreadyStartedError:
            out.state = "error"
            out.reasons = [f"subject copy {cell.project} is busy: another run ({cell.run_id}) is in progress"]
        except ChildWorkflowError as err:
            out.state = "cancelled" if is_cancelled_exception(err) else "error"
            out.reasons = [f"the run {'was cancelled' if out.state == 'cancelled' else 'failed'}: "
                           f"{err.cause or err}"]
        except asyncio.CancelledError:
            out.state = "cancelled"
            self._finished(out)
            raise
        # Not in a `finally`: a dropped campaign's coroutine closed by the garbage collector (GeneratorExit) must not
        # read the clock of, or set details on, whichever workflow runs then (supervise.compensation).
        self._finished(out)

    def _finished(self, out: CellResult) -> None:
        out.finished_at = workflow.now()
        self._details()

    @staticmethod
    def _fill(out: CellResult, r: ChaosReport) -> None:
        out.state = r.verdict
        out.targets, out.reasons = r.targets or ([r.target] if r.target else []), failing_first(r)
        out.time_to_detect_s, out.time_to_restore_s = r.time_to_detect_s, r.time_to_restore_s
        out.safety = r.safety.verdict if r.safety else None
        out.diagnosis_correct = r.diagnosis.correct if r.diagnosis else None

    async def _scorecard(self, info: workflow.Info) -> Scorecard:
        try:
            previous = await workflow.execute_activity(
                previous_campaign_report,
                PreviousCampaignRequest(name=self.view.campaign, workflow_id=info.workflow_id, run_id=info.run_id,
                                        task_queue=info.task_queue),
                summary="the previous run of this campaign, for the scorecard",
                **policy.previous_campaign())
        except ActivityError as err:
            workflow.logger.warning("no scorecard: the previous run could not be read: %s", err.cause or err)
            return Scorecard(unavailable=f"the previous run could not be read: {err.cause or err}")
        if previous is None:
            return Scorecard()
        return compare(previous.cells, self.view.cells, previous.run_id, previous.started_at)

    def _details(self) -> None:
        """The web UI's current details: one line per cell, linked to its run by workflow id."""
        done = sum(c.state not in ("pending", "running") for c in self.view.cells)
        lines = [f"**campaign {self.view.campaign}**: {done}/{len(self.view.cells)} cells done", ""]
        lines += [f"- {c.key}: **{c.state}**" + (f" (`{c.workflow_id}`)" if c.workflow_id else "")
                  for c in self.view.cells]
        workflow.set_current_details("\n".join(lines))
