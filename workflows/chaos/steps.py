"""The experiment's steps, run in order: faults, waits, load changes, approvals, checks, parallel lanes and random
fault schedules.

Every fault is owned by its own guard (a child that outlives the run) from before it is injected, and is undone at
the end of its step once it has been detected (or held for its duration), diagnosed and confirmed to have taken
effect. The final step's fault is the exception: the compensation in run()'s `finally` undoes it, as it undoes
every fault a cut-short run leaves on (newest first). That is also exactly what a one-fault run did before steps
existed, so those runs replay unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from workflows import compat
from workflows.chaos import plan, stages, verdict
from workflows.chaos.background import Background
from workflows.chaos.state import FaultRecord, Record
from workflows.chaos.view import View

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        ChaosInput,
        CheckResult,
        Evidence,
        FaultRequest,
        FaultState,
        FaultStep,
        LaneStep,
        PreflightResult,
        Stage,
        Step,
    )
    from durable_chaos.ids import fault_tag


async def all_or_none(coros: list[Awaitable]) -> None:
    """Run side by side; when one fails, cancel the others and wait for them (their faults are then still
    recorded as on, and the compensation undoes them), then raise the first failure."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except GeneratorExit:
        raise  # the run was dropped and is being collected: nothing to wait for (supervise.compensation)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Steps:
    def __init__(self, inp: ChaosInput, pre: PreflightResult, first: FaultRequest | None, record: Record, view: View,
                 background: Background, gate: Callable[[Stage], Awaitable[None]],
                 approved: Callable[[str], Awaitable[None]]) -> None:
        self.inp, self.pre, self.first = inp, pre, first
        self.record, self.view, self.background = record, view, background
        self.gate, self.approved = gate, approved
        self.steps = inp.experiment_steps()
        self._choosing = asyncio.Lock()
        self._first_guard: asyncio.Task | None = None  # the first fault's guard, started in the countdown
        self._diagnoses: list[asyncio.Task] = []  # diagnoses that run on while their fault is undone
        self._beside = 0  # how many of them have not answered yet
        view.progress.step_count = len(self.steps)

    async def run(self) -> None:
        for number, step in enumerate(self.steps, 1):
            self.view.progress.step = number
            final = number == len(self.steps)
            if step.lanes:
                await all_or_none([self._lane(number, lane_no, lane) for lane_no, lane in enumerate(step.lanes, 1)])
            elif step.random is not None:
                await self._random(number, step)
            else:
                await self._plain(number, None, step, final)

    async def _lane(self, number: int, lane_no: int, lane: list[LaneStep]) -> None:
        for step in lane:
            await self._plain(number, lane_no, step, final=False)

    async def _plain(self, number: int, lane: int | None, step: LaneStep, final: bool) -> None:
        if step.fault is not None:
            await self.fault(number, lane, step.name, step.fault, keep_on=final)
        elif step.approval is not None:
            self.view.stage(Stage.WAIT, f"step {number}: waiting for `advance`: {step.approval}")
            await self.approved(step.approval)
        elif step.load_rate is not None:
            self.background.rate = step.load_rate
            self.view.stage(Stage.WAIT, f"step {number}: load now {step.load_rate:g} ops/s")
        elif step.until_steady or step.check:
            await self._steady(number, step)
        elif step.wait_s is not None:
            self.view.stage(Stage.WAIT, f"step {number}: waiting {step.wait_s:g}s")
            await workflow.sleep(step.wait_s, summary=f"step {number}: wait {step.wait_s:g}s")

    async def _steady(self, number: int, step: LaneStep) -> None:
        """A wait until every invariant holds (within `wait_s`, or the restore timeout), or a check that they hold
        now; either way a subject that is not steady fails the step, and with it the run."""
        timeout = step.wait_s or (self.inp.check_timeout_s * 4 if step.check else self.inp.restore_timeout_s)
        what = "checking every invariant holds" if step.check else "waiting until every invariant holds"
        self.view.stage(Stage.WAIT, f"step {number}: {what} (at most {timeout:g}s)")
        try:
            await stages.verify(self.inp, timeout, self.pre.slow)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            raise StepFailed(f"step {number}: the subject was not steady within {timeout:g}s") from err

    # -- one fault ---------------------------------------------------------------------------------------------------

    def guard_first_fault(self) -> None:
        """Start the first fault's guard now (the countdown): a guard that outlives a run closed before its kill
        finds the fault never went in, and restores nothing."""
        self._first_guard = asyncio.ensure_future(stages.start_guard(self.first, self.pre.fault_label))

    async def _guard(self, fault: FaultRecord) -> None:
        if fault is self.record.first and self._first_guard is not None:
            await self._first_guard
        else:
            await stages.start_guard(fault.request, fault.label, self.record.faults.index(fault) + 1)

    async def fault(self, number: int, lane: int | None, name: str, spec: FaultStep, keep_on: bool,
                    drawn_at_s: float | None = None) -> FaultRecord:
        """Choose, guard, inject, detect, confirm (and gather the evidence), diagnose, hold; then undo, unless
        `keep_on` (the final step: the compensation undoes it). The diagnosis runs on beside the hold and the undo
        when nothing paces the run (`_detect`): the run awaits it before its verdict (`diagnosed`)."""
        async with self._choosing:  # lanes choose one at a time: two lanes never draw the same member
            request, label = await self._choose(spec)
            fault = FaultRecord(number, lane, name, request, label, spec.max_fault_s,
                                drawn_at_s=drawn_at_s)
            self.record.faults.append(fault)
        p = self.view.progress
        p.target, p.targets, p.fault_label = fault.request.target, fault.request.members, fault.label
        first = fault is self.record.first
        await self.gate(Stage.INJECT)
        self.view.stage(Stage.INJECT, f"step {number}: {fault.what}" if len(self.steps) > 1 else fault.what)
        # Recorded *before* the activity runs: if anything dies from here on, restore (or the reaper) knows which
        # node may be down. The deadline is armed from here too, and the guard is up before the fault is.
        self.view.target(fault.request.target)
        fault.state = FaultState.INJECTED
        self.view.fault_state(FaultState.INJECTED)
        fault.deadline = workflow.now() + timedelta(seconds=spec.max_fault_s)
        self._arm_deadline()
        await self._guard(fault)
        fault.injected = await stages.inject(self.inp, fault.request, fault.what)
        # The inject waits out a cancellation (it must not race the undo), and an activity that completes anyway
        # swallows the cancel: without this the step would go on, detect and hold, as if nobody had cancelled it.
        if asyncio.current_task().cancelling():
            compat.deprecated("cancel-after-inject")
            raise asyncio.CancelledError()
        if first:
            p.injected_at = fault.injected.injected_at
        self.view.steps(self.record.faults)
        theirs = self.background.start_their_detectors(fault.injected.injected_at) if first else []
        evidence: list[asyncio.Task] = []  # gathered beside the confirm (`_detect`), when nothing comes between
        try:
            await self._detect(fault, spec, theirs, evidence)
            if evidence and compat.patched("diagnose-beside-undo"):
                # The evidence is all a diagnosis reads. Once it is gathered (the fault still on), the fault is
                # held or undone while Claude answers (up to `diagnosis_deadline_s`): the run waits for the
                # diagnosis before its report (`diagnosed`), not with a member down.
                await asyncio.gather(*evidence, return_exceptions=True)  # a failed gathering: `_diagnose` says so
                self._diagnoses.append(asyncio.ensure_future(self._diagnose(fault, first, evidence[0], beside=True)))
            elif not fault.random:  # a random schedule's faults come too fast to diagnose each
                await self._diagnose(fault, first, evidence[0] if evidence else None)
            if spec.duration_s is not None:
                await self._hold(fault, spec.duration_s)
        finally:
            for task in [*theirs, *evidence]:  # cut short: their detectors stop with the experiment (the report
                task.cancel()                  # says so), and so does a gathering nobody will read
        if not keep_on:
            await self.undo([fault])
        return fault

    async def _choose(self, spec: FaultStep) -> tuple[FaultRequest, str]:
        """The run's first fault was chosen in preflight (the roles read there); a later one reads them now, and
        never draws a member another fault holds."""
        if self.first is not None and not self.record.faults:
            return self.first, self.pre.fault_label
        # Members of faults on, or chosen and about to go in (appended, not injected yet).
        busy = sorted({m for f in self.record.faults if f.state != FaultState.RESTORED for m in f.request.members})
        chosen = await stages.choose(self.inp, spec, busy)
        members = plan.draw(chosen.choice, workflow.random().randrange)
        info = workflow.info()
        n = len(self.record.faults) + 1
        request = FaultRequest(subject=self.inp.subject, fault=spec.fault, target=members[0], targets=members,
                               params=spec.params, tag=fault_tag(info.workflow_id, info.run_id, n))
        return request, chosen.fault_label

    async def _detect(self, fault: FaultRecord, spec: FaultStep, theirs: list[asyncio.Task],
                      evidence: list[asyncio.Task]) -> None:
        p, inp = self.view.progress, self.inp
        first = fault is self.record.first
        await self.gate(Stage.DETECT)
        timeout = min(inp.detect_timeout_s, spec.duration_s or inp.detect_timeout_s)
        self.view.stage(Stage.DETECT, f"checking invariants every {inp.detect_interval_s:g}s")
        p.detect_deadline = workflow.now() + timedelta(seconds=timeout)
        fault.detection = await stages.detect(inp, timeout, self.pre.slow)
        if fault.detection.detected and first:
            self.view.detected(p.injected_at, fault.detection.detected_at)
        elif not fault.detection.detected:
            workflow.logger.warning("fault on %s not detected within %ss", ", ".join(fault.request.members), timeout)
        # Did the fault do anything? Asked while it is still on, once traffic has flowed through it. The diagnosis's
        # evidence is gathered at the same time when the diagnosis follows at once (one round trip less): not when
        # their monitoring is waited for first, nor when `advance` paces the run, nor for a random schedule's fault.
        compat.deprecated("fault-effect")
        if not (theirs or fault.random or inp.interactive) and compat.patched("evidence-beside-confirm"):
            evidence.append(asyncio.ensure_future(self._gather(fault)))
        fault.effect = await stages.confirm(fault.request)
        self.view.steps(self.record.faults)
        if theirs:
            # The fault stays on until their monitoring has had its chance (bounded by the detect timeout).
            self.view.stage(Stage.DETECT, f"waiting for your monitoring: {', '.join(d.name for d in inp.detectors)}")
            await asyncio.gather(*theirs)

    def _gather(self, fault: FaultRecord) -> Awaitable[Evidence]:
        return stages.gather(self.inp, fault.detection, fault.injected.fault_began, self.record.windows)

    async def _diagnose(self, fault: FaultRecord, first: bool, gathered: asyncio.Task | None,
                        beside: bool = False) -> None:
        """Gather evidence (unless `gathered`), ask for a diagnosis and grade it. `beside`: it runs while the run
        goes on (the live view's stage is the run's, not this)."""
        p = self.view.progress
        await self.gate(Stage.DIAGNOSE)
        if not beside:
            self.view.stage(Stage.DIAGNOSE, "gathering evidence")
        self._beside += beside
        p.diagnosing = self._beside > 0  # the `progress` query's alone: no history event
        try:
            evidence = await (gathered or self._gather(fault))
            if not beside:
                self.view.stage(Stage.DIAGNOSE, "diagnosing (Claude, rules engine as fallback)")
            diagnosis = await stages.ask_for_diagnosis(self.inp, evidence)
            diagnosis.correct = verdict.grade(diagnosis, fault.request.members)
            fault.diagnosis = diagnosis
            if first:
                p.diagnosis = diagnosis
                self.view.diagnosis_graded(diagnosis.correct)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            # A diagnosis is worth having, never worth keeping a node down for.
            self.record.reasons.append(f"diagnosis of {fault.what} failed: {err.cause or err}")
        finally:
            self._beside -= beside
            p.diagnosing = self._beside > 0
        self.view.steps(self.record.faults)

    async def diagnosed(self) -> None:
        """Every diagnosis that ran on beside its fault's undo has answered (each bounded by its own deadline)."""
        if not all(task.done() for task in self._diagnoses):
            # Said within the last stage: the live view's strip of stages never goes back.
            self.view.say("waiting for the diagnosis (Claude, rules engine as fallback)")
        await asyncio.gather(*self._diagnoses)

    async def _hold(self, fault: FaultRecord, duration_s: float) -> None:
        left = (fault.injected.injected_at + timedelta(seconds=duration_s) - workflow.now()).total_seconds()
        if left > 0:
            self.view.stage(Stage.HOLD, f"{fault.what}: held {duration_s:g}s, until "
                                        f"{fault.injected.injected_at + timedelta(seconds=duration_s):%H:%M:%S} UTC")
            await workflow.sleep(left, summary=f"hold {fault.what}")

    def _arm_deadline(self) -> None:
        """The run's fault deadline is the earliest of its open faults' (`supervise` cuts the run short there)."""
        deadlines = [f.deadline for f in self.record.open_faults() if f.deadline is not None]
        self.view.progress.fault_deadline = min(deadlines) if deadlines else None

    # -- undo --------------------------------------------------------------------------------------------------------

    async def undo(self, faults: list[FaultRecord]) -> CheckResult | None:
        """Undo these faults, newest first, then wait until every invariant holds again (undo once more what came
        back). Returns the final check, None if the subject did not get healthy."""
        p = self.view.progress
        for fault in reversed(faults):
            self.view.stage(Stage.RESTORE, f"undoing {fault.what}")
            fault.restore = await stages.undo(fault.request, self.view)
            fault.state = FaultState.RESTORED
            if fault is self.record.first:
                p.restore_started_at = fault.restore.started_at
        self._arm_deadline()
        if not self.record.open_faults():
            self.view.fault_state(FaultState.RESTORED)
        gone = [f for f in faults if f.restore.container_gone]
        for fault in gone:
            self.record.reasons.append(f"{', '.join(fault.request.members)}: no container any more (subject torn "
                                       "down?): nothing to restore or verify")
        if gone:
            self.view.steps(self.record.faults)
            return None
        self.view.stage(Stage.VERIFY, "waiting until every invariant holds again")
        final = await self._verify()
        # An inject attempt the server had already timed out (its worker starved past the heartbeat timeout) can
        # still land after the undo: its `docker kill` was on its way. Undo once more; the undo checks the real
        # state and only acts on a fault that is back.
        if final is None:
            back = [f for f in faults if not (await stages.undo(f.request)).already_up]
            if back:
                for fault in back:
                    self.record.reasons.append(f"the fault was back on {', '.join(fault.request.members)} after the "
                                               "restore (an inject attempt that had timed out landed late): undone "
                                               "again")
                final = await self._verify()
        if final is not None:
            self.record.final = final
            for fault in faults:
                fault.final = final
                if fault is self.record.first:
                    self.view.restored(self._restore_began(fault), final.at)
        self.view.steps(self.record.faults)
        return final

    @staticmethod
    def _restore_began(fault: FaultRecord) -> datetime:
        """Where time to restore counts from: the undo's first attempt, however many it took. Runs from before the
        patch counted from the attempt that succeeded (the value goes into a search attribute: a command)."""
        return fault.restore.began_at if compat.patched("restore-from-first-attempt") else fault.restore.started_at

    async def _verify(self) -> CheckResult | None:
        try:
            return await stages.verify(self.inp, slow=self.pre.slow)
        except ActivityError:  # not healthy within the restore timeout: the report says so
            return None

    # -- a random schedule ---------------------------------------------------------------------------------------------

    async def _random(self, number: int, step: Step) -> None:
        """Faults at the offsets the seed gives, each held `hold_s` then undone; then wait until steady."""
        spec = step.random
        seed = spec.seed if spec.seed is not None else workflow.random().randrange(2**31)
        self.record.seed = seed
        schedule = plan.random_schedule(spec, self.pre.targets, self.pre.spare, seed)
        start = workflow.now()
        self.view.stage(Stage.WAIT, f"step {number}: random schedule, seed {seed}: {len(schedule)} faults in "
                                    f"{spec.duration_s:g}s")

        async def one(i: int, drawn: plan.Drawn) -> None:
            wait = (start + timedelta(seconds=drawn.offset_s) - workflow.now()).total_seconds()
            if wait > 0:
                await workflow.sleep(wait, summary=f"random fault {i} at +{drawn.offset_s:g}s")
            await self.fault(number, i, step.name, FaultStep(fault=drawn.kind, target=drawn.target,
                                                            duration_s=spec.hold_s,
                                                            max_fault_s=spec.hold_s + self.inp.detect_timeout_s),
                             keep_on=False, drawn_at_s=drawn.offset_s)

        await all_or_none([one(i, d) for i, d in enumerate(schedule, 1)])
        left = (start + timedelta(seconds=spec.duration_s) - workflow.now()).total_seconds()
        if left > 0:
            await workflow.sleep(left, summary=f"step {number}: random schedule ends")


class StepFailed(Exception):
    """A step that cannot go on (a check that failed): the run ends its experiment and says why."""

