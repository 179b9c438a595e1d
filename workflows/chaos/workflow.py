"""ChaosDemoWorkflow: one experiment on one subject, with a restore that always runs.

    preflight ─► background: load, guardrails ─► countdown ─► steps (steps.py), in order:
                     a fault: choose ─► inject ─► detect ─► confirm ∥ evidence ─► hold ─► undo ─► verify
                              (its guard starts before: the first fault's with the countdown; its diagnosis is
                               made from the evidence while the run goes on, and awaited before the verdict)
                     a wait, a load change, an approval, a check; parallel lanes; a random fault schedule
                                                      │ (cut short: abort, fault deadline, stop condition, cancel)
    finally, always: compensate = undo what is on, newest first ─► verify healthy ─► data safety ─► diagnoses ─► verdict
                     ─► report ─► notify

Workflow code is deterministic: no I/O, no wall clock, no `random`. Time comes from `workflow.now()`, randomness
from `workflow.random()` and everything else from activity results recorded in the event history, so a replay
(after a worker crash) takes exactly the same decisions - above all, it picks the same target. Patches: see
workflows/compat.py; no call here may move in the command order.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from workflows import compat
from workflows.chaos import plan, stages, verdict
from workflows.chaos.background import Background
from workflows.chaos.state import Record
from workflows.chaos.steps import StepFailed, Steps
from workflows.chaos.supervise import compensation, stop, supervise
from workflows.chaos.view import View

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        WORKFLOW_NAME,
        ChaosInput,
        ChaosReport,
        CheckResult,
        FaultRequest,
        Progress,
        SafetyReport,
        Stage,
        verdict_failure,
    )
    from workflows.metrics import record_run
    from workflows.notify import notify_run_end


@workflow.defn(name=WORKFLOW_NAME)
class ChaosDemoWorkflow:
    def __init__(self) -> None:
        self.view = View()
        self.record = Record()
        self._interactive = False
        self._go = False  # interactive: `advance` released the held stage
        self._abort: str | None = None
        self._settled = False  # restore done (or nothing to restore): what `abort` waits for

    @workflow.run
    async def run(self, inp: ChaosInput) -> ChaosReport:
        started_at = workflow.now()
        p = self.view.progress
        p.subject, p.fault, p.started_at, p.host = inp.subject.name, inp.fault, started_at, inp.subject.host
        self._interactive = inp.interactive

        self.view.stage(Stage.PREFLIGHT, "bringing the subject up and waiting for its steady state")
        pre = await stages.bring_up(inp)
        first = self._plan(inp, pre)
        inp = plan.with_subject_defaults(inp, pre)

        background = Background(inp, self.record, self.view)
        load, watch = background.start()
        steps = Steps(inp, pre, first, self.record, self.view, background, self._gate, self._approval)
        experiment = asyncio.create_task(self._experiment(inp, steps))
        # The compensation. It runs on success, on a failed stage, on abort, at the fault deadline, when a stop
        # condition trips and on cancellation alike (a cancel lands here as CancelledError from `supervise`).
        async with compensation(lambda: self._compensate(steps, background, experiment, load, watch)):
            self._cut_short(await supervise(experiment, p, self.record, lambda: self._abort))

        final = self.record.final
        safety = await self._check_safety(inp, final)
        await steps.diagnosed()
        info = workflow.info()
        report = verdict.report(inp, p, self.record, verdict.Ending(
            workflow_id=info.workflow_id, run_id=info.run_id, project=pre.project,
            started_at=started_at, finished_at=workflow.now(), final=final, safety=safety))
        self.view.verdict(report.verdict)
        # Observability, once the verdict is final: metrics (no history events) and the webhooks (a child the run
        # does not wait for).
        record_run(report)
        await notify_run_end(report, inp.notify_url, pre.notify_worker)
        # Let an `abort` caller get its answer before the run closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        if report.verdict == "fail":
            compat.deprecated("fail-on-verdict")
            raise verdict_failure(report)  # Failed in the web UI's list; the report is the failure's detail
        return report

    # -- queries and updates: the live view, interactive pacing, abort ---------------------------------------------

    @workflow.query
    def progress(self) -> Progress:
        return self.view.progress

    @workflow.update
    async def advance(self) -> Stage:
        """Interactive pacing: release the stage the run is holding. Durable, so any terminal (or the UI) can."""
        stage = self.view.progress.waiting_for
        self._go = True
        return stage

    @advance.validator
    def _validate_advance(self) -> None:
        if self.view.progress.waiting_for is None:
            raise ValueError(f"the run is not waiting (stage: {self.view.progress.stage.value})")

    @workflow.update
    async def abort(self, reason: str) -> Progress:
        """Restore now and finish with a report. Returns once the fault (if any) is undone."""
        if self._abort is None:
            self._abort = reason or "aborted"
        await workflow.wait_condition(lambda: self._settled)
        return self.view.progress

    async def _gate(self, stage: Stage) -> None:
        if self._interactive:
            self.view.say(f"waiting for `advance` to start {stage.value}")
            await self._until_advanced(stage)

    async def _approval(self, what: str) -> None:
        """An approval step: held until someone sends `advance`, interactive or not."""
        await self._until_advanced(Stage.WAIT)

    async def _until_advanced(self, stage: Stage) -> None:
        self.view.progress.waiting_for = stage
        await workflow.wait_condition(lambda: self._go)
        self._go = False
        self.view.progress.waiting_for = None

    # -- the experiment: countdown, then the steps (steps.py) ---------------------------------------------------

    def _plan(self, inp: ChaosInput, pre) -> FaultRequest | None:
        """The first step's fault, chosen from preflight's choice; None when the first step injects nothing."""
        step = inp.experiment_steps()[0].fault
        if step is None:
            return None
        fault = plan.fault_request(inp, step, pre)
        p = self.view.progress
        p.target, p.targets, p.fault_label = fault.target, fault.members, pre.fault_label
        if p.fault_label != inp.fault:  # the kind went in at start; its parameters are known since preflight
            self.view.fault_label(p.fault_label)
        return fault

    async def _experiment(self, inp: ChaosInput, steps: Steps) -> None:
        """Results land on the record; the undo of what is still on is not in here but in run()'s `finally`."""
        try:
            await self._countdown(inp, steps)
            await steps.run()
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self.record.reasons.append(f"stage {self.view.progress.stage.value} failed: {err.cause or err}")
        except StepFailed as err:
            self.record.step_failed = str(err)
            self.record.reasons.append(str(err))

    async def _countdown(self, inp: ChaosInput, steps: Steps) -> None:
        """One durable timer for the whole countdown (a timer per second would put about 6 events a second in the
        history). Viewers count down to `countdown_ends_at` on their own clock. The first fault's guard starts
        beside it: the kill then follows the countdown's end without waiting for a child to start."""
        p, first = self.view.progress, steps.first
        if first is not None and compat.patched("guard-in-countdown"):
            steps.guard_first_fault()
        await self._gate(Stage.COUNTDOWN)
        p.countdown_ends_at = workflow.now() + timedelta(seconds=inp.countdown_s)
        what = f"{p.fault_label} {', '.join(first.members)}" if first else "step 1"
        self.view.stage(Stage.COUNTDOWN, f"{what} at {p.countdown_ends_at:%H:%M:%S} UTC")
        if inp.countdown_s:
            await workflow.sleep(inp.countdown_s, summary=f"countdown {inp.countdown_s}s")
        p.countdown_ends_at = p.countdown_left = None
        # A countdown shorter than a load window would inject before any baseline was measured. Wait for the first
        # window to end (a lost one counts too: a missing baseline must not hold the run).
        if self.record.load_rounds == 0:
            self.view.stage(Stage.COUNTDOWN, "measuring a load baseline")
            await workflow.wait_condition(lambda: self.record.load_rounds > 0)

    # -- compensation, then the safety check ------------------------------------------------------------------------

    def _cut_short(self, why: str | None) -> None:
        if why is not None:
            self.view.progress.cut_short = why
            self.record.reasons.append(why)

    async def _compensate(self, steps: Steps, background: Background, experiment: asyncio.Task, load: asyncio.Task,
                          watch: asyncio.Task | None) -> None:
        """Stop the experiment, undo every fault still on (newest first), verify, stop the load."""
        p, rec = self.view.progress, self.record
        background.stop_guarding()
        if watch is not None:
            await stop(watch, p, rec)
        await stop(experiment, p, rec)
        if rec.open_faults():
            await steps.undo(rec.open_faults())
        self._settled = True
        background.stop_load = True
        await load

    async def _check_safety(self, inp: ChaosInput, final: CheckResult | None) -> SafetyReport:
        """After the restore (the load has stopped): read back every key the load wrote, check the history."""
        self.view.stage(Stage.SAFETY, "final read of every key written, then the data safety check")
        injected = self.record.injected
        try:
            # Every window started, lost ones too: a window whose worker died wrote no part, and its operations
            # may have landed, so the check must not judge without them.
            return await stages.check_data_safety(inp, self.record.load_rounds,
                                                  injected.fault_began if injected else None,
                                                  final.at if final else None)
        except ActivityError as err:  # the verdict must not hang on it: say it is unknown, and why
            return SafetyReport(verdict="unknown", reasons=[f"the safety check failed: {err.cause or err}"])
