"""ChaosDemoWorkflow: one experiment on one subject, with a restore that always runs.

    preflight ─► background: load, guardrails ─► countdown ─► inject ─► detect ─► diagnose
                                                      │ (cut short: abort, fault deadline, stop condition, cancel)
    finally, always: compensate = undo ─► verify healthy ─► data safety ─► verdict ─► report ─► notify

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
from workflows.chaos.supervise import shielded, stop, supervise
from workflows.chaos.view import View

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        WORKFLOW_NAME,
        ChaosInput,
        ChaosReport,
        CheckResult,
        FaultRequest,
        FaultState,
        Progress,
        RestoreResult,
        SafetyReport,
        Stage,
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
        p.subject, p.fault, p.started_at = inp.subject.name, inp.fault, started_at
        self._interactive = inp.interactive

        self.view.stage(Stage.PREFLIGHT, "bringing the subject up and waiting for its steady state")
        pre = await stages.bring_up(inp)
        fault = self._plan(inp, pre)
        inp = plan.with_subject_defaults(inp, pre)

        background = Background(inp, self.record, self.view)
        load, watch = background.start()
        experiment = asyncio.create_task(self._experiment(inp, fault, background))
        try:
            self._cut_short(await supervise(experiment, p, self.record, inp.max_fault_s, lambda: self._abort))
        finally:
            # The compensation. It runs on success, on a failed stage, on abort, at the fault deadline, when a stop
            # condition trips and on cancellation alike (a cancel lands here as CancelledError from `supervise`).
            restore, final = await shielded(
                lambda: self._compensate(inp, fault, background, experiment, load, watch))

        safety = await self._check_safety(inp, final)
        info = workflow.info()
        report = verdict.report(inp, p, self.record, verdict.Ending(
            workflow_id=info.workflow_id, run_id=info.run_id, project=pre.project, targets=fault.members,
            started_at=started_at, finished_at=workflow.now(), restore=restore, final=final, safety=safety))
        self.view.verdict(report.verdict)
        # Observability, once the verdict is final: metrics (no history events) and the webhooks (a child the run
        # does not wait for).
        record_run(report)
        await notify_run_end(report, inp.notify_url, pre.notify_worker)
        # Let an `abort` caller get its answer before the run closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
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
        if not self._interactive:
            return
        self.view.progress.waiting_for = stage
        self.view.say(f"waiting for `advance` to start {stage.value}")
        await workflow.wait_condition(lambda: self._go)
        self._go = False
        self.view.progress.waiting_for = None

    # -- the experiment: countdown -> inject -> detect -> diagnose --------------------------------------------------

    def _plan(self, inp: ChaosInput, pre) -> FaultRequest:
        fault = plan.fault_request(inp, pre)
        p = self.view.progress
        p.target, p.targets, p.fault_label = fault.target, fault.members, pre.fault_label
        if p.fault_label != inp.fault:  # the kind went in at start; its parameters are known since preflight
            self.view.fault_label(p.fault_label)
        return fault

    async def _experiment(self, inp: ChaosInput, fault: FaultRequest, background: Background) -> None:
        """Results land on the record; the restore is not in here but in run()'s `finally`."""
        theirs: list[asyncio.Task] = []
        try:
            await self._countdown(inp, fault)
            await self._inject(inp, fault)
            theirs = background.start_their_detectors(self.view.progress.injected_at)
            await self._detect(inp, fault, theirs)
            await self._diagnose(inp, fault)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self.record.reasons.append(f"stage {self.view.progress.stage.value} failed: {err.cause or err}")
        finally:
            for task in theirs:  # cut short: their detectors stop with the experiment (the report says so)
                task.cancel()

    async def _countdown(self, inp: ChaosInput, fault: FaultRequest) -> None:
        """One durable timer for the whole countdown (a timer per second would put about 6 events a second in the
        history). Viewers count down to `countdown_ends_at` on their own clock."""
        p = self.view.progress
        await self._gate(Stage.COUNTDOWN)
        p.countdown_ends_at = workflow.now() + timedelta(seconds=inp.countdown_s)
        self.view.stage(Stage.COUNTDOWN, f"{p.fault_label} {', '.join(fault.members)} at "
                                         f"{p.countdown_ends_at:%H:%M:%S} UTC")
        if inp.countdown_s:
            await workflow.sleep(inp.countdown_s, summary=f"countdown {inp.countdown_s}s")
        p.countdown_ends_at = p.countdown_left = None
        # A countdown shorter than a load window would inject before any baseline was measured. Wait for the first
        # window to end (a lost one counts too: a missing baseline must not hold the run).
        if self.record.load_rounds == 0:
            self.view.stage(Stage.COUNTDOWN, "measuring a load baseline")
            await workflow.wait_condition(lambda: self.record.load_rounds > 0)

    async def _inject(self, inp: ChaosInput, fault: FaultRequest) -> None:
        p = self.view.progress
        what = f"{p.fault_label} {', '.join(fault.members)}"
        await self._gate(Stage.INJECT)
        self.view.stage(Stage.INJECT, what)
        # Recorded *before* the activity runs: if anything dies from here on, restore (or the reaper) knows which
        # node may be down. The deadline is armed from here too, and the guard is up before the fault is.
        self.view.target(fault.target)
        self.view.fault_state(FaultState.INJECTED)
        p.fault_deadline = workflow.now() + timedelta(seconds=inp.max_fault_s)
        await stages.start_guard(fault, p.fault_label)
        self.record.injected = await stages.inject(inp, fault, what)
        p.injected_at = self.record.injected.injected_at

    async def _detect(self, inp: ChaosInput, fault: FaultRequest, theirs: list[asyncio.Task]) -> None:
        p = self.view.progress
        await self._gate(Stage.DETECT)
        self.view.stage(Stage.DETECT, f"checking invariants every {inp.detect_interval_s:g}s")
        p.detect_deadline = workflow.now() + timedelta(seconds=inp.detect_timeout_s)
        detection = self.record.detection = await stages.detect(inp)
        if detection.detected:
            self.view.detected(p.injected_at, detection.detected_at)
        else:
            workflow.logger.warning("fault on %s not detected within %ss", ", ".join(fault.members),
                                    inp.detect_timeout_s)
        if theirs:
            # The fault stays on until their monitoring has had its chance (bounded by the detect timeout).
            self.view.stage(Stage.DETECT, f"waiting for your monitoring: {', '.join(d.name for d in inp.detectors)}")
            await asyncio.gather(*theirs)

    async def _diagnose(self, inp: ChaosInput, fault: FaultRequest) -> None:
        p = self.view.progress
        await self._gate(Stage.DIAGNOSE)
        self.view.stage(Stage.DIAGNOSE, "gathering evidence")
        try:
            evidence = await stages.gather(inp, self.record.detection, p.injected_at, self.record.windows)
            self.view.stage(Stage.DIAGNOSE, "diagnosing (Claude, rules engine as fallback)")
            diagnosis = await stages.ask_for_diagnosis(inp, evidence)
            diagnosis.correct = verdict.grade(diagnosis, fault.members)
            self.record.diagnosis = p.diagnosis = diagnosis
            self.view.diagnosis_graded(diagnosis.correct)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            # A diagnosis is worth having, never worth keeping a node down for.
            self.record.reasons.append(f"diagnosis failed: {err.cause or err}")

    # -- compensation, then the safety check ------------------------------------------------------------------------

    def _cut_short(self, why: str | None) -> None:
        if why is not None:
            self.view.progress.cut_short = why
            self.record.reasons.append(why)

    async def _compensate(self, inp: ChaosInput, fault: FaultRequest, background: Background,
                          experiment: asyncio.Task, load: asyncio.Task,
                          watch: asyncio.Task | None) -> tuple[RestoreResult | None, CheckResult | None]:
        p, rec = self.view.progress, self.record
        background.guarded = False
        if watch is not None:
            await stop(watch, p, rec)
        await stop(experiment, p, rec)
        restore = final = None
        if p.fault_state == FaultState.INJECTED:
            restore, final = await self._restore(inp, fault)
        self._settled = True
        background.stop_load = True
        await load
        return restore, final

    async def _restore(self, inp: ChaosInput, fault: FaultRequest) -> tuple[RestoreResult, CheckResult | None]:
        p, members = self.view.progress, ", ".join(fault.members)
        self.view.stage(Stage.RESTORE, f"undoing {p.fault_label} on {members}")
        restore = await stages.undo(fault)
        p.restore_started_at = restore.started_at
        self.view.fault_state(FaultState.RESTORED)
        if restore.container_gone:
            self.record.reasons.append(f"{members}: no container any more (subject torn down?): nothing to restore "
                                       "or verify")
            return restore, None
        self.view.stage(Stage.VERIFY, "waiting until every invariant holds again")
        final = await self._verify(inp)
        # An inject attempt the server had already timed out (its worker starved past the heartbeat timeout) can
        # still land after the undo: its `docker kill` was on its way. Undo once more; the undo checks the real
        # state and only acts on a fault that is back.
        if final is None and not (await stages.undo(fault)).already_up:
            self.record.reasons.append(f"the fault was back on {members} after the restore (an inject attempt that "
                                       "had timed out landed late): undone again")
            final = await self._verify(inp)
        if final is None:
            return restore, None
        self.view.restored(restore.started_at, final.at)
        return restore, final

    @staticmethod
    async def _verify(inp: ChaosInput) -> CheckResult | None:
        try:
            return await stages.verify(inp)
        except ActivityError:  # not healthy within the restore timeout: the report says so
            return None

    async def _check_safety(self, inp: ChaosInput, final: CheckResult | None) -> SafetyReport:
        """After the restore (the load has stopped): read back every key the load wrote, check the history."""
        self.view.stage(Stage.SAFETY, "final read of every key written, then the data safety check")
        injected = self.record.injected
        try:
            # Every window started, lost ones too: a window whose worker died wrote no part, and its operations
            # may have landed, so the check must not judge without them.
            return await stages.check_data_safety(inp, self.record.load_rounds,
                                                  injected.injected_at if injected else None,
                                                  final.at if final else None)
        except ActivityError as err:  # the verdict must not hang on it: say it is unknown, and why
            return SafetyReport(verdict="unknown", reasons=[f"the safety check failed: {err.cause or err}"])
