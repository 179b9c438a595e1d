"""ChaosDemoWorkflow: one experiment on one subject, with a restore that always runs.

Workflow code is deterministic: no I/O, no wall clock, no `random`. Time comes from `workflow.now()`, randomness
from `workflow.random()` and everything else from activity results recorded in the event history, so a replay
(after a worker crash) takes exactly the same decisions - above all, it picks the same target.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.diagnosis import diagnose, gather_evidence
    from activities.faults import inject_fault, restore_fault
    from activities.load import run_load_window
    from activities.probes import detect_violation, preflight, wait_healthy
    from contracts import (
        WORKFLOW_NAME,
        Attr,
        ChaosInput,
        ChaosReport,
        CheckResult,
        DetectRequest,
        DetectResult,
        Diagnosis,
        EvidenceRequest,
        FaultRequest,
        FaultState,
        InjectResult,
        LoadRequest,
        LoadSummary,
        LoadWindow,
        PreflightRequest,
        Progress,
        RestoreResult,
        Stage,
        WaitHealthyRequest,
    )

# A dead worker must be noticed within seconds, not minutes: every long activity heartbeats at least once per check.
HEARTBEAT = timedelta(seconds=5)
# Restore is the one thing that must eventually happen: retry it for as long as it takes, backing off to 10 s.
RESTORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=0.5), backoff_coefficient=2,
                            maximum_interval=timedelta(seconds=10), maximum_attempts=0)
STAGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=5),
                          maximum_attempts=5)


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


def grade(diagnosis: Diagnosis, target: str) -> bool:
    """Correct = the killed target is named and no member that was not hit is blamed."""
    return diagnosis.affected_nodes == [target]


@workflow.defn(name=WORKFLOW_NAME)
class ChaosDemoWorkflow:
    def __init__(self) -> None:
        self._progress = Progress()
        self._windows: list[LoadWindow] = []
        self._stop_load = False

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    # -- helpers that keep the UI (search attributes, current details) in step with the run ----------------------

    def _stage(self, stage: Stage, message: str) -> None:
        self._progress.stage = stage
        self._progress.message = message
        workflow.upsert_search_attributes([Attr.STAGE.value_set(stage.value)])
        self._details()

    def _fault_state(self, state: FaultState) -> None:
        self._progress.fault_state = state
        workflow.upsert_search_attributes([Attr.FAULT_STATE.value_set(state.value)])
        self._details()

    def _details(self) -> None:
        p = self._progress
        lines = [f"**Stage:** {p.stage.value} - {p.message}", f"**Target:** {p.target or 'not chosen yet'}",
                 f"**Fault state:** {p.fault_state.value}"]
        if p.last_window:
            w = p.last_window
            lines.append(f"**Load:** {w.ops_per_s:g} ops/s, {w.errors} errors (window {p.windows})")
        if p.time_to_detect_s is not None:
            lines.append(f"**Time to detect:** {p.time_to_detect_s:.3f} s")
        if p.time_to_restore_s is not None:
            lines.append(f"**Time to restore:** {p.time_to_restore_s:.3f} s")
        workflow.set_current_details("\n\n".join(lines))

    # -- load runs alongside every stage after preflight ------------------------------------------------------

    async def _load_loop(self, inp: ChaosInput) -> None:
        while not self._stop_load:
            try:
                window = await workflow.execute_activity(
                    run_load_window,
                    LoadRequest(subject=inp.subject, window_s=inp.load_window_s, concurrency=inp.load_concurrency,
                                check_timeout_s=inp.check_timeout_s),
                    start_to_close_timeout=timedelta(seconds=inp.load_window_s + 10), heartbeat_timeout=HEARTBEAT,
                    # A lost window is a gap in the chart, not a reason to retry into the next one.
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    summary=f"load window {len(self._windows) + 1}",
                )
            except ActivityError:
                await workflow.sleep(1)
                continue
            self._windows.append(window)
            self._progress.last_window = window
            self._progress.windows = len(self._windows)
            self._details()

    # -- the run --------------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ChaosInput) -> ChaosReport:
        started_at = workflow.now()
        p = self._progress
        p.subject, p.started_at = inp.subject.name, started_at

        self._stage(Stage.PREFLIGHT, "bringing the subject up and waiting for its steady state")
        pre = await workflow.execute_activity(
            preflight,
            PreflightRequest(subject=inp.subject, target=inp.target, timeout_s=inp.preflight_timeout_s,
                             check_timeout_s=inp.check_timeout_s),
            # Room for an image build and `compose up` on top of the health wait.
            start_to_close_timeout=timedelta(seconds=inp.preflight_timeout_s + 180),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary=f"preflight {inp.subject.name}",
        )
        if inp.target is not None and inp.target not in pre.targets:  # preflight checks this too; never trust input
            raise ApplicationError(f"{inp.target!r} is not a target", type="BadInput", non_retryable=True)
        # Chosen once, in workflow code: a replay or a retried activity can never pick a second node.
        target = inp.target or pre.targets[workflow.random().randrange(len(pre.targets))]
        p.target = target
        fault = FaultRequest(subject=inp.subject, fault=inp.fault, target=target)

        load = asyncio.create_task(self._load_loop(inp))
        injected: InjectResult | None = None
        detection: DetectResult | None = None
        diagnosis: Diagnosis | None = None
        restore: RestoreResult | None = None
        final: CheckResult | None = None
        reasons: list[str] = []
        try:
            self._stage(Stage.COUNTDOWN, f"{inp.fault} {target} in {inp.countdown_s}")
            for left in range(inp.countdown_s, 0, -1):
                p.countdown_left = left
                self._stage(Stage.COUNTDOWN, f"{inp.fault} {target} in {left}")
                await workflow.sleep(1, summary=f"countdown {left}")
            p.countdown_left = None

            self._stage(Stage.INJECT, f"{inp.fault} {target}")
            # Recorded *before* the activity runs: if anything dies from here on, restore (or the reaper) knows
            # which node may be down.
            workflow.upsert_search_attributes([Attr.TARGET.value_set(target)])
            self._fault_state(FaultState.INJECTED)
            injected = await workflow.execute_activity(
                inject_fault, fault, start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=HEARTBEAT,
                retry_policy=STAGE_RETRY,
                summary=f"{inp.fault} {target}",
            )
            p.injected_at = injected.injected_at

            self._stage(Stage.DETECT, f"checking invariants every {inp.detect_interval_s:g}s")
            p.detect_deadline = workflow.now() + timedelta(seconds=inp.detect_timeout_s)
            detection = await workflow.execute_activity(
                detect_violation,
                DetectRequest(subject=inp.subject, interval_s=inp.detect_interval_s, timeout_s=inp.detect_timeout_s,
                              check_timeout_s=inp.check_timeout_s),
                start_to_close_timeout=timedelta(seconds=inp.detect_timeout_s + 30),
                heartbeat_timeout=HEARTBEAT, retry_policy=STAGE_RETRY,
                summary=f"detect: poll every {inp.detect_interval_s:g}s for {inp.detect_timeout_s:g}s",
            )
            if detection.detected:
                p.time_to_detect_s = _seconds(injected.injected_at, detection.detected_at)
                workflow.upsert_search_attributes([Attr.DETECT_SECONDS.value_set(p.time_to_detect_s)])
            else:
                workflow.logger.warning("fault on %s not detected within %ss", target, inp.detect_timeout_s)

            self._stage(Stage.DIAGNOSE, "gathering evidence")
            try:
                evidence = await workflow.execute_activity(
                    gather_evidence, EvidenceRequest(subject=inp.subject, detect=detection),
                    start_to_close_timeout=timedelta(seconds=60), retry_policy=STAGE_RETRY,
                    summary="gather evidence",
                )
                diagnosis = await workflow.execute_activity(
                    diagnose, evidence, start_to_close_timeout=timedelta(seconds=90), heartbeat_timeout=HEARTBEAT,
                    retry_policy=STAGE_RETRY, summary="diagnose",
                )
                diagnosis.correct = grade(diagnosis, target)
                p.diagnosis = diagnosis
                workflow.upsert_search_attributes([Attr.DIAGNOSIS_CORRECT.value_set(diagnosis.correct)])
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise
                # A diagnosis is worth having, never worth keeping a node down for.
                reasons.append(f"diagnosis failed: {err.cause or err}")
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            reasons.append(f"stage {p.stage.value} failed: {err.cause or err}")
        finally:
            # The compensation. It runs on success, on a failed stage and on cancellation alike.
            if p.fault_state == FaultState.INJECTED:
                restore, final = await self._restore(inp, fault)
            self._stop_load = True
            await load

        finished_at = workflow.now()
        return self._report(inp, pre.project, target, started_at, finished_at, injected, detection, diagnosis, restore, final,
                            reasons)

    async def _restore(self, inp: ChaosInput, fault: FaultRequest) -> tuple[RestoreResult, CheckResult | None]:
        p = self._progress
        self._stage(Stage.RESTORE, f"undoing {fault.fault} on {fault.target}")
        restore = await workflow.execute_activity(
            restore_fault, fault, start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=HEARTBEAT,
            retry_policy=RESTORE_RETRY,
            summary=f"restore {fault.target}",
        )
        self._fault_state(FaultState.RESTORED)
        self._stage(Stage.VERIFY, "waiting until every invariant holds again")
        try:
            final = await workflow.execute_activity(
                wait_healthy,
                WaitHealthyRequest(subject=inp.subject, timeout_s=inp.restore_timeout_s,
                                   check_timeout_s=inp.check_timeout_s),
                start_to_close_timeout=timedelta(seconds=inp.restore_timeout_s + 30), heartbeat_timeout=HEARTBEAT,
                retry_policy=RetryPolicy(maximum_attempts=2), summary="verify healthy",
            )
        except ActivityError:
            return restore, None
        p.time_to_restore_s = _seconds(restore.started_at, final.at)
        workflow.upsert_search_attributes([Attr.RESTORE_SECONDS.value_set(p.time_to_restore_s)])
        return restore, final

    def _report(self, inp: ChaosInput, project: str, target: str, started_at: datetime, finished_at: datetime,
                injected: InjectResult | None, detection: DetectResult | None, diagnosis: Diagnosis | None,
                restore: RestoreResult | None, final: CheckResult | None, reasons: list[str]) -> ChaosReport:
        p = self._progress
        detected = bool(detection and detection.detected)
        if injected is None:
            reasons.append("the fault was never injected")
        elif not detected:
            reasons.append(f"the fault was not detected within {inp.detect_timeout_s:g}s")
        else:
            reasons.append(f"detected after {p.time_to_detect_s:.3f}s: "
                           f"{'; '.join(detection.first_violation.violations)}")
        if p.fault_state == FaultState.RESTORED:
            reasons.append(f"{target} restored")
        if final is None:
            reasons.append("the subject did not return to its steady state after restore")
        else:
            reasons.append(f"every invariant holds again after {p.time_to_restore_s:.3f}s")
        if diagnosis is not None:
            reasons.append(f"diagnosis ({diagnosis.source}) named {', '.join(diagnosis.affected_nodes) or 'nobody'}: "
                           f"{'correct' if diagnosis.correct else 'incorrect'}")
        passed = detected and p.fault_state == FaultState.RESTORED and final is not None and final.ok
        verdict = "pass" if passed else "fail"
        self._stage(Stage.DONE, f"verdict: {verdict}")
        workflow.upsert_search_attributes([Attr.VERDICT.value_set(verdict)])
        info = workflow.info()
        return ChaosReport(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            subject=inp.subject.name,
            project=project,
            fault=inp.fault,
            target=target,
            verdict=verdict,
            reasons=reasons,
            started_at=started_at,
            finished_at=finished_at,
            injected_at=injected.injected_at if injected else None,
            detected_at=detection.detected_at if detection else None,
            restored_at=final.at if final else None,
            time_to_detect_s=p.time_to_detect_s,
            time_to_restore_s=p.time_to_restore_s,
            fault_state=p.fault_state,
            diagnosis=diagnosis,
            load=self._load_summary(injected, final),
            final_check=final,
        )

    def _load_summary(self, injected: InjectResult | None, final: CheckResult | None) -> LoadSummary:
        windows = self._windows
        baseline = [w.ops_per_s for w in windows if injected and w.end <= injected.injected_at]
        during = [w.ops_per_s for w in windows
                  if injected and w.end > injected.injected_at and (final is None or w.start < final.at)]
        return LoadSummary(
            windows=windows,
            baseline_ops_s=round(sum(baseline) / len(baseline), 1) if baseline else None,
            worst_fault_ops_s=min(during) if during else None,
            errors=sum(w.errors for w in windows),
        )
