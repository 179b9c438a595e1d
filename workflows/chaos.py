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
from temporalio.exceptions import ActivityError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.diagnosis import diagnose, gather_evidence
    from activities.faults import inject_fault, restore_fault
    from activities.guardrails import wait_external_detection, watch_stop_conditions
    from activities.load import run_load_window
    from activities.probes import detect_violation, preflight, wait_healthy
    from activities.safety import check_safety
    from durable_chaos.contracts import (
        GUARD_WORKFLOW_NAME,
        RECENT_WINDOWS,
        WORKFLOW_NAME,
        WORKFLOW_TASK_TIMEOUT,
        Attr,
        ChaosInput,
        ChaosReport,
        CheckResult,
        DetectorResult,
        DetectRequest,
        DetectResult,
        DiagnoseRequest,
        Diagnosis,
        ErrorType,
        EvidenceRequest,
        ExternalDetector,
        ExternalDetectRequest,
        FaultRequest,
        FaultState,
        GuardRequest,
        InjectResult,
        LoadRequest,
        LoadSummary,
        LoadWindow,
        PreflightRequest,
        Progress,
        RestoreResult,
        SafetyReport,
        SafetyRequest,
        Stage,
        TargetChoice,
        Trip,
        WaitHealthyRequest,
        WatchRequest,
        bad_input,
        fault_guard_id,
        fault_tag,
    )
    from workflows.metrics import record_run
    from workflows.notify import notify_run_end

# A dead worker is noticed when its heartbeats stop for this long; the worker heartbeats every activity on a timer
# (runtime/heartbeats.py) and sends one at least every 0.5 s. Measured (bench/resume.py): the server times the
# attempt out 1.5-2.5 s after a SIGKILL and runs the retry about 1 s later, whatever the 0.1 s first interval.
HEARTBEAT = timedelta(seconds=1.5)
# Restore is the one thing that must eventually happen: retry it for as long as it takes, backing off to 10 s.
RESTORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=0.1), backoff_coefficient=2,
                            maximum_interval=timedelta(seconds=10), maximum_attempts=0)
# The evidence gets the load windows around the fault, not the whole run's (they are in the history already).
EVIDENCE_LOAD_WINDOWS = 30
STAGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=0.1), maximum_interval=timedelta(seconds=5),
                          maximum_attempts=7)  # retries over ~6 s, as 5 attempts from 0.5 s were


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


def safety_reason(s: SafetyReport) -> str:
    """The data safety verdict as one of the run's reasons."""
    if s.verdict == "ok":
        return (f"data safety ok: {s.ops} operations, {s.acked_writes} acknowledged writes to {s.keys} keys, none "
                f"lost, every read linearizable")
    return f"data safety {s.verdict}: {'; '.join(s.reasons) or 'no reason given'}"


def grade(diagnosis: Diagnosis, targets: list[str]) -> bool:
    """Correct = every member hit is named and no healthy member is blamed: the run hit those and nothing else."""
    return set(diagnosis.affected_nodes) == set(targets)


@workflow.defn(name=WORKFLOW_NAME)
class ChaosDemoWorkflow:
    def __init__(self) -> None:
        self._progress = Progress()
        self._windows: list[LoadWindow] = []
        self._load_rounds = 0  # load windows finished, lost ones included
        self._stop_load = False
        self._interactive = False
        self._go = False  # interactive: `advance` released the held stage
        self._abort: str | None = None
        self._settled = False  # restore done (or nothing to restore): what `abort` waits for
        self._injected: InjectResult | None = None
        self._detection: DetectResult | None = None
        self._diagnosis: Diagnosis | None = None
        self._reasons: list[str] = []
        self._memo: dict = {}  # what the memo holds now: only changes are upserted (each upsert is an event)
        self._trip: Trip | None = None  # the stop condition that tripped first
        self._guarded = True  # stop conditions count until restore begins: then the fault is being undone anyway
        self._theirs: dict[str, DetectorResult] = {}  # the user's detectors that concluded, by name

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
        if p.countdown_ends_at is not None:
            # workflow.now() is the replay-safe clock; it moves with every load window, which keeps this current.
            p.countdown_left = p.countdown_seconds_left(workflow.now())
        lines = [f"**Stage:** {p.stage.value} - {p.message}",
                 f"**Fault:** {p.fault_label or p.fault}",
                 f"**Target:** {', '.join(p.targets) or p.target or 'not chosen yet'}",
                 f"**Fault state:** {p.fault_state.value}"]
        if p.countdown_ends_at is not None:
            lines.append(f"**Countdown:** {p.countdown_left} s left, ends at {p.countdown_ends_at:%H:%M:%S} UTC")
        if p.last_window:
            w = p.last_window
            lines.append(f"**Load:** {w.ops_per_s:g} ops/s, {w.errors} errors (window {p.windows})")
        if p.stage == Stage.DETECT and p.injected_at and p.detect_deadline:
            # workflow.now() is the replay-safe clock; the details refresh with every load window.
            lines.append(f"**Detection clock:** {(workflow.now() - p.injected_at).total_seconds():.1f} s since "
                         f"the fault on {', '.join(p.targets) or p.target}, gives up at "
                         f"{p.detect_deadline:%H:%M:%S} UTC")
        if p.time_to_detect_s is not None:
            lines.append(f"**Time to detect:** {p.time_to_detect_s:.3f} s")
        if p.time_to_restore_s is not None:
            lines.append(f"**Time to restore:** {p.time_to_restore_s:.3f} s")
        workflow.set_current_details("\n\n".join(lines))
        self._sync_memo()

    def _sync_memo(self) -> None:
        """Keep the run's facts in its memo: current details need a live worker to answer, the memo does not.
        Patched: runs started before the memo replay without these events."""
        if not workflow.patched("facts-in-memo"):
            return
        facts = self._progress.facts().model_dump(mode="json", exclude_none=True)
        changed = {key: value for key, value in facts.items() if self._memo.get(key) != value}
        if changed:
            workflow.upsert_memo(changed)
            self._memo.update(changed)

    # -- load runs alongside every stage after preflight ------------------------------------------------------

    def _load_request(self, inp: ChaosInput, load_since: datetime, due_from: datetime | None) -> LoadRequest:
        req = LoadRequest(subject=inp.subject, window_s=inp.load_window_s, concurrency=inp.load_concurrency,
                          check_timeout_s=inp.check_timeout_s, rate=inp.load_rate, due_from=due_from)
        if inp.stop.on_load:
            # The window judges the load's figures itself (stop conditions are evaluated in activities): it gets
            # what it cannot see, the windows before it inside the error rate's window and the last success.
            cut = workflow.now() - timedelta(seconds=inp.stop.error_window_s + inp.load_window_s)
            req.stop, req.load_since = inp.stop, load_since
            req.recent = [w for w in self._windows if w.end > cut]
            req.last_ok_before = max((w.last_ok_at for w in self._windows if w.last_ok_at), default=None)
        return req

    def _tripped(self, trip: Trip | None) -> None:
        """Keep the first trip while the guardrails count; `_supervise` cuts the experiment short on it."""
        if trip is not None and self._guarded and self._trip is None:
            self._trip = trip
            workflow.logger.warning("%s", trip.reason())

    async def _load_loop(self, inp: ChaosInput) -> None:
        load_since = workflow.now()
        due_from = None  # where the last window's schedule ended: the next one carries it on
        while not self._stop_load:
            try:
                window = await workflow.execute_activity(
                    run_load_window,
                    self._load_request(inp, load_since, due_from),
                    start_to_close_timeout=timedelta(seconds=inp.load_window_s + 10), heartbeat_timeout=HEARTBEAT,
                    # A lost window is a gap in the chart, not a reason to retry into the next one.
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    summary=f"load window {len(self._windows) + 1}",
                )
            except ActivityError:
                self._load_rounds += 1
                due_from = None
                await workflow.sleep(1)
                continue
            self._load_rounds += 1
            due_from = window.start + timedelta(seconds=inp.load_window_s)
            self._windows.append(window)
            self._tripped(window.tripped)
            self._progress.windows = len(self._windows)
            self._progress.recent_windows = self._windows[-RECENT_WINDOWS:]
            self._details()

    async def _watch(self, inp: ChaosInput) -> None:
        """The abort probe and abort query, asked by one long activity that returns when one trips. Retried for as
        long as the run lasts: a guardrail that died with its worker must come back, not silently stop watching."""
        trip = await workflow.execute_activity(
            watch_stop_conditions, WatchRequest(stop=inp.stop, check_timeout_s=max(inp.check_timeout_s, 2.0)),
            start_to_close_timeout=timedelta(seconds=inp.countdown_s + inp.max_fault_s + 600),
            heartbeat_timeout=HEARTBEAT, retry_policy=RESTORE_RETRY,
            summary=f"guardrails: {'; '.join(inp.stop.labels())}",
        )
        self._tripped(trip)

    async def _their_detector(self, inp: ChaosInput, detector: ExternalDetector, since: datetime) -> None:
        try:
            result = await workflow.execute_activity(
                wait_external_detection,
                ExternalDetectRequest(detector=detector, since=since, timeout_s=inp.detect_timeout_s,
                                      interval_s=inp.detect_interval_s),
                start_to_close_timeout=timedelta(seconds=inp.detect_timeout_s + 30), heartbeat_timeout=HEARTBEAT,
                retry_policy=STAGE_RETRY, summary=f"their detector: {detector.name}",
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            result = DetectorResult(name=detector.name, fired=False, detail=f"could not ask it: {err.cause or err}")
        self._theirs[detector.name] = result

    # -- updates: interactive pacing and abort ------------------------------------------------------------------

    @workflow.update
    async def advance(self) -> Stage:
        """Interactive pacing: release the stage the run is holding. Durable, so any terminal (or the UI) can."""
        stage = self._progress.waiting_for
        self._go = True
        return stage

    @advance.validator
    def _validate_advance(self) -> None:
        if self._progress.waiting_for is None:
            raise ValueError(f"the run is not waiting (stage: {self._progress.stage.value})")

    @workflow.update
    async def abort(self, reason: str) -> Progress:
        """Restore now and finish with a report. Returns once the fault (if any) is undone."""
        if self._abort is None:
            self._abort = reason or "aborted"
        await workflow.wait_condition(lambda: self._settled)
        return self._progress

    async def _gate(self, stage: Stage) -> None:
        if not self._interactive:
            return
        self._progress.waiting_for = stage
        self._stage(self._progress.stage, f"waiting for `advance` to start {stage.value}")
        await workflow.wait_condition(lambda: self._go)
        self._go = False
        self._progress.waiting_for = None

    # -- the run --------------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ChaosInput) -> ChaosReport:
        started_at = workflow.now()
        p = self._progress
        p.subject, p.fault, p.started_at = inp.subject.name, inp.fault, started_at
        self._interactive = inp.interactive

        self._stage(Stage.PREFLIGHT, "bringing the subject up and waiting for its steady state")
        pre = await workflow.execute_activity(
            preflight,
            PreflightRequest(subject=inp.subject, target=inp.target, timeout_s=inp.preflight_timeout_s,
                             check_timeout_s=inp.check_timeout_s, fault=inp.fault, fault_params=inp.fault_params,
                             count=inp.count, allow_quorum_loss=inp.allow_quorum_loss,
                             stop=inp.stop if inp.stop.on_load or inp.stop.watched else None,
                             detectors=inp.detectors),
            # Room for an image build and `compose up` on top of the health wait; heartbeats every second meanwhile.
            start_to_close_timeout=timedelta(seconds=inp.preflight_timeout_s + 180),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary=f"preflight {inp.subject.name}",
        )
        # Chosen once, in workflow code: a replay or a retried activity can never pick another member. Workers from
        # before the fault catalog return no choice: a named target, or one drawn from every target.
        choice = pre.choice or TargetChoice(must=[inp.target] if inp.target else [],
                                            pool=[] if inp.target else pre.targets)
        targets = choice.draw(workflow.random().randrange)
        if not targets or any(t not in pre.targets for t in targets):  # preflight checks this too; never trust input
            raise bad_input(f"{inp.target!r} is not a target")
        target = p.target = targets[0]
        p.targets, p.fault_label = targets, pre.fault_label or inp.fault
        info = workflow.info()
        fault = FaultRequest(subject=inp.subject, fault=inp.fault, target=target, targets=targets,
                             params=inp.fault_params, tag=fault_tag(info.workflow_id, info.run_id))
        if workflow.patched("fault-catalog") and p.fault_label != inp.fault:
            # The kind went in at start; its parameters are known (validated) since preflight.
            workflow.upsert_search_attributes([Attr.FAULT.value_set(p.fault_label)])
        # Unset timeouts take the subject's own defaults (a Patroni failover is slower than an etcd re-election).
        # Runs started before subjects had defaults carry explicit values, so their replay is unchanged.
        inp = inp.model_copy(update={
            "detect_timeout_s": inp.detect_timeout_s or pre.defaults.detect_timeout_s,
            "restore_timeout_s": inp.restore_timeout_s or pre.defaults.restore_timeout_s,
        })

        load = asyncio.create_task(self._load_loop(inp))
        watch = asyncio.create_task(self._watch(inp)) if inp.stop.watched else None
        experiment = asyncio.create_task(self._experiment(inp, fault))
        try:
            cut = await self._supervise(experiment, inp.max_fault_s)
            if cut is not None:
                p.cut_short = cut
                self._reasons.append(cut)
        finally:
            # The compensation. It runs on success, on a failed stage, on abort, at the fault deadline, when a stop
            # condition trips and on cancellation alike (a cancel lands here as CancelledError from `_supervise`).
            restore, final = await self._shielded(self._compensate(inp, fault, experiment, load, watch))

        # Runs started before the safety check replay without it (and report none).
        safety = await self._check_safety(inp, final) if workflow.patched("safety-check") else None
        report = self._report(inp, pre.project, targets, started_at, workflow.now(), restore, final, safety)
        # Observability, once the verdict is final: metrics (no history events) and the webhooks (a child the run
        # does not wait for).
        record_run(report)
        await notify_run_end(report, inp.notify_url, pre.notify_worker)
        # Let an `abort` caller get its answer before the run closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    async def _compensate(self, inp: ChaosInput, fault: FaultRequest, experiment: asyncio.Task,
                          load: asyncio.Task, watch: asyncio.Task | None) -> tuple[RestoreResult | None,
                                                                                   CheckResult | None]:
        self._guarded = False
        if watch is not None:
            await self._cancel(watch)
        await self._cancel(experiment)
        restore = final = None
        if self._progress.fault_state == FaultState.INJECTED:
            restore, final = await self._restore(inp, fault)
        self._settled = True
        self._stop_load = True
        await load
        return restore, final

    @staticmethod
    async def _shielded(coro):
        """Run `coro` to completion even if the run is cancelled meanwhile; then let the cancellation through.

        Without this, a cancel that arrives while restore is in flight would cancel the restore itself.
        """
        task = asyncio.create_task(coro)
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                if task.done():
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()
        return result

    async def _supervise(self, experiment: asyncio.Task, max_fault_s: float) -> str | None:
        """Wait for the experiment; cut it short on abort or at the fault deadline. Returns why it was cut."""
        while True:
            deadline = self._progress.fault_deadline
            timeout = None if deadline is None else max(0.0, (deadline - workflow.now()).total_seconds())
            try:
                # Also wake when the deadline gets armed (at inject) so the timeout starts counting then.
                await workflow.wait_condition(
                    lambda: experiment.done() or self._abort is not None or self._trip is not None
                    or self._progress.fault_deadline != deadline,
                    timeout=timeout,
                    timeout_summary="fault deadline",
                )
            except asyncio.TimeoutError:
                if self._before_detection():
                    return f"fault deadline ({max_fault_s:g}s) reached before detection: restoring now"
                return (f"fault deadline ({max_fault_s:g}s) reached during {self._progress.stage.value}: "
                        f"stage cancelled, restoring now")
            if self._trip is not None and not experiment.done():
                if self._progress.fault_state == FaultState.NONE:
                    return f"{self._trip.reason()}: before the fault, nothing injected"
                return f"{self._trip.reason()}: restoring now"
            if experiment.done():
                return None
            if self._abort is not None:
                if self._before_detection():
                    return f"aborted before detection: {self._abort}"
                return f"aborted during {self._progress.stage.value}: {self._abort}"

    def _before_detection(self) -> bool:
        """The fault is on and detection has not concluded. Held at the detect gate the stage still reads `inject`,
        so the stage name alone would tell the reader the wrong story."""
        return self._progress.fault_state == FaultState.INJECTED and self._detection is None

    async def _cancel(self, task: asyncio.Task) -> None:
        if not task.done():
            task.cancel()
        try:
            await task
        except (asyncio.CancelledError, ActivityError):
            pass
        except Exception as err:  # a bug must not stop the compensation: record it and go on to restore
            self._reasons.append(f"internal error during {self._progress.stage.value}: {err!r}")

    async def _experiment(self, inp: ChaosInput, fault: FaultRequest) -> None:
        """countdown -> inject -> detect -> diagnose. Results land on self; restore is not in here but in run()."""
        p = self._progress
        target = ", ".join(fault.members)
        what = self._progress.fault_label
        theirs: list[asyncio.Task] = []
        try:
            await self._gate(Stage.COUNTDOWN)
            if workflow.patched("countdown-one-timer"):
                await self._countdown(inp, target)
            else:  # runs started before the single timer replay their second-by-second countdown
                self._stage(Stage.COUNTDOWN, f"{what} {target} in {inp.countdown_s}")
                for left in range(inp.countdown_s, 0, -1):
                    p.countdown_left = left
                    self._stage(Stage.COUNTDOWN, f"{what} {target} in {left}")
                    await workflow.sleep(1, summary=f"countdown {left}")
                p.countdown_left = None
            # A countdown shorter than a load window would kill before any baseline was measured. Wait for the first
            # window to end (a lost one counts too: a missing baseline must not hold the run). Patched so runs that
            # were in flight when this shipped replay the path they took.
            if workflow.patched("baseline-before-inject") and self._load_rounds == 0:
                self._stage(Stage.COUNTDOWN, "measuring a load baseline")
                await workflow.wait_condition(lambda: self._load_rounds > 0)

            await self._gate(Stage.INJECT)
            self._stage(Stage.INJECT, f"{what} {target}")
            # Recorded *before* the activity runs: if anything dies from here on, restore (or the reaper) knows
            # which node may be down. The deadline is armed from here too.
            workflow.upsert_search_attributes([Attr.TARGET.value_set(fault.target)])
            self._fault_state(FaultState.INJECTED)
            p.fault_deadline = workflow.now() + timedelta(seconds=inp.max_fault_s)
            if workflow.patched("fault-guard"):  # runs started before guards replay without one
                await self._start_guard(fault)
            self._injected = await workflow.execute_activity(
                # Some kinds take a while (a stop waits out its grace period); heartbeats tell a dead worker.
                inject_fault, fault, start_to_close_timeout=timedelta(seconds=inp.max_fault_s + 30),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=STAGE_RETRY, summary=f"{what} {target}",
                # If the run is cut short mid-kill, wait for the kill to finish before restoring.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            p.injected_at = self._injected.injected_at
            # The user's own monitoring, timed from the same instant as ours, in parallel with it.
            theirs += [asyncio.create_task(self._their_detector(inp, d, p.injected_at)) for d in inp.detectors]

            await self._gate(Stage.DETECT)
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
            self._detection = detection
            if detection.detected:
                p.time_to_detect_s = _seconds(self._injected.injected_at, detection.detected_at)
                workflow.upsert_search_attributes([Attr.DETECT_SECONDS.value_set(p.time_to_detect_s)])
            else:
                workflow.logger.warning("fault on %s not detected within %ss", target, inp.detect_timeout_s)
            if theirs:
                # The fault stays on until their monitoring has had its chance (bounded by the detect timeout).
                self._stage(Stage.DETECT, f"waiting for your monitoring: {', '.join(d.name for d in inp.detectors)}")
                await asyncio.gather(*theirs)

            await self._gate(Stage.DIAGNOSE)
            self._stage(Stage.DIAGNOSE, "gathering evidence")
            try:
                evidence = await workflow.execute_activity(
                    gather_evidence,
                    EvidenceRequest(subject=inp.subject, detect=detection, injected_at=self._injected.injected_at,
                                    load_windows=self._windows[-EVIDENCE_LOAD_WINDOWS:]),
                    start_to_close_timeout=timedelta(seconds=30), schedule_to_close_timeout=timedelta(seconds=60),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=STAGE_RETRY, summary="gather evidence",
                )
                self._stage(Stage.DIAGNOSE, "diagnosing (Claude, rules engine as fallback)")
                # The activity falls back to the rules engine by itself within deadline_s, so it fails only if the
                # worker dies; schedule_to_close bounds the stage, retry included, however that goes.
                diagnosis = await workflow.execute_activity(
                    diagnose, DiagnoseRequest(evidence=evidence, deadline_s=inp.diagnosis_deadline_s),
                    start_to_close_timeout=timedelta(seconds=inp.diagnosis_deadline_s + 10),
                    schedule_to_close_timeout=timedelta(seconds=inp.diagnosis_deadline_s + 20),
                    heartbeat_timeout=HEARTBEAT, retry_policy=RetryPolicy(maximum_attempts=2), summary="diagnose",
                )
                diagnosis.correct = grade(diagnosis, fault.members)
                self._diagnosis = p.diagnosis = diagnosis
                workflow.upsert_search_attributes([Attr.DIAGNOSIS_CORRECT.value_set(diagnosis.correct)])
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise
                # A diagnosis is worth having, never worth keeping a node down for.
                self._reasons.append(f"diagnosis failed: {err.cause or err}")
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self._reasons.append(f"stage {p.stage.value} failed: {err.cause or err}")
        finally:
            for task in theirs:  # cut short: their detectors stop with the experiment (the report says so)
                task.cancel()

    async def _start_guard(self, fault: FaultRequest) -> None:
        """Started (and awaited) before the kill, so no fault is ever on without a guard. A terminated run runs no
        code, its `finally` included; the guard outlives it (ABANDON) and restores what it left injected."""
        info = workflow.info()
        await workflow.start_child_workflow(
            GUARD_WORKFLOW_NAME, GuardRequest(workflow_id=info.workflow_id, run_id=info.run_id, fault=fault),
            id=fault_guard_id(info.workflow_id, info.run_id), parent_close_policy=ParentClosePolicy.ABANDON,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            static_summary=f"guard {self._progress.fault_label} {', '.join(fault.members)} of "
                           f"{info.workflow_id}",
        )

    async def _countdown(self, inp: ChaosInput, target: str) -> None:
        """One durable timer for the whole countdown (a timer per second would put about 6 events a second in the
        history). Viewers count down to `countdown_ends_at` on their own clock."""
        p = self._progress
        p.countdown_ends_at = workflow.now() + timedelta(seconds=inp.countdown_s)
        self._stage(Stage.COUNTDOWN, f"{p.fault_label} {target} at {p.countdown_ends_at:%H:%M:%S} UTC")
        if inp.countdown_s:
            await workflow.sleep(inp.countdown_s, summary=f"countdown {inp.countdown_s}s")
        p.countdown_ends_at = p.countdown_left = None

    async def _restore(self, inp: ChaosInput, fault: FaultRequest) -> tuple[RestoreResult, CheckResult | None]:
        p = self._progress
        self._stage(Stage.RESTORE, f"undoing {p.fault_label} on {', '.join(fault.members)}")
        restore = await self._undo(fault)
        p.restore_started_at = restore.started_at
        self._fault_state(FaultState.RESTORED)
        if restore.container_gone:
            self._reasons.append(f"{', '.join(fault.members)}: no container any more (subject torn down?): nothing "
                                 "to restore or verify")
            return restore, None
        self._stage(Stage.VERIFY, "waiting until every invariant holds again")
        if workflow.patched("undo-again-when-unhealthy"):
            final = await self._verify(inp, retry_unhealthy=False)
            # An inject attempt the server had already timed out (its worker starved past the heartbeat timeout)
            # can still land after the undo: its `docker kill` was on its way. Undo once more; the undo checks the
            # real state and only acts on a fault that is back.
            if final is None and not (await self._undo(fault)).already_up:
                self._reasons.append(f"the fault was back on {', '.join(fault.members)} after the restore (an inject "
                                     "attempt that had timed out landed late): undone again")
                final = await self._verify(inp, retry_unhealthy=False)
        else:  # runs started before replay their single verify with its retry
            final = await self._verify(inp, retry_unhealthy=True)
        if final is None:
            return restore, None
        p.time_to_restore_s = _seconds(restore.started_at, final.at)
        workflow.upsert_search_attributes([Attr.RESTORE_SECONDS.value_set(p.time_to_restore_s)])
        self._details()  # a cancelled run ends without a report: the memo gets TTR here
        return restore, final

    async def _undo(self, fault: FaultRequest) -> RestoreResult:
        return await workflow.execute_activity(
            restore_fault, fault, start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=HEARTBEAT,
            retry_policy=RESTORE_RETRY, summary=f"restore {', '.join(fault.members)}",
        )

    async def _verify(self, inp: ChaosInput, retry_unhealthy: bool) -> CheckResult | None:
        """Every invariant holds again (None if not within the restore timeout). A second attempt is for a worker
        that died; a subject still unhealthy after the whole timeout is retried only by runs from before the undo
        again."""
        try:
            return await workflow.execute_activity(
                wait_healthy,
                WaitHealthyRequest(subject=inp.subject, timeout_s=inp.restore_timeout_s,
                                   check_timeout_s=inp.check_timeout_s),
                start_to_close_timeout=timedelta(seconds=inp.restore_timeout_s + 30), heartbeat_timeout=HEARTBEAT,
                retry_policy=RetryPolicy(maximum_attempts=2, non_retryable_error_types=(
                    [] if retry_unhealthy else [ErrorType.SUBJECT_UNHEALTHY])),
                summary="verify healthy",
            )
        except ActivityError:
            return None

    async def _check_safety(self, inp: ChaosInput, final: CheckResult | None) -> SafetyReport:
        """After the restore (the load has stopped): read back every key the load wrote and check the operation
        history. An activity does both: the history is a file on the worker, never in this workflow's history."""
        self._stage(Stage.SAFETY, "final read of every key written, then the data safety check")
        try:
            return await workflow.execute_activity(
                check_safety,
                SafetyRequest(subject=inp.subject, check_timeout_s=inp.check_timeout_s,
                              # Every window started, lost ones too: a window whose worker died wrote no part,
                              # and its operations may have landed, so the check must not judge without them.
                              windows=self._load_rounds,
                              fault_started_at=self._injected.injected_at if self._injected else None,
                              fault_ended_at=final.at if final else None),
                start_to_close_timeout=timedelta(minutes=5), heartbeat_timeout=HEARTBEAT,
                retry_policy=RetryPolicy(maximum_attempts=2), summary="final read + safety check",
            )
        except ActivityError as err:  # the verdict must not hang on it: say it is unknown, and why
            return SafetyReport(verdict="unknown", reasons=[f"the safety check failed: {err.cause or err}"])

    def _report(self, inp: ChaosInput, project: str, targets: list[str], started_at: datetime, finished_at: datetime,
                restore: RestoreResult | None, final: CheckResult | None,
                safety: SafetyReport | None = None) -> ChaosReport:
        p = self._progress
        injected, detection, diagnosis, reasons = self._injected, self._detection, self._diagnosis, self._reasons
        detected = bool(detection and detection.detected)
        if p.fault_state == FaultState.NONE:
            reasons.append("the fault was never injected")
        elif detected:
            reasons.append(f"detected after {p.time_to_detect_s:.3f}s: "
                           f"{'; '.join(detection.first_violation.violations)}")
        elif detection is not None:
            reasons.append(f"the fault was not detected within {inp.detect_timeout_s:g}s")
        # Otherwise detection never concluded: the cut (abort, deadline) or the failed stage is already a reason.
        if p.fault_state == FaultState.RESTORED:
            reasons.append(f"{', '.join(targets)} restored")
        if final is None:
            reasons.append("the subject did not return to its steady state after restore")
        else:
            reasons.append(f"every invariant holds again after {p.time_to_restore_s:.3f}s")
        if diagnosis is not None:
            source = diagnosis.source + (f", fallback: {diagnosis.fallback_reason}" if diagnosis.fallback_reason else "")
            reasons.append(f"diagnosis ({source}) named {', '.join(diagnosis.affected_nodes) or 'nobody'}: "
                           f"{'correct' if diagnosis.correct else 'incorrect'}")
        if safety is not None:
            reasons.append(safety_reason(safety))
        detectors = self._detectors(inp, detection) if inp.detectors else []
        missed = [d for d in detectors if not d.ours and not d.fired]
        for d in detectors[1:]:
            reasons.append(f"your monitoring: {d.name} fired after {d.time_to_detect_s:.3f}s" if d.fired else
                           f"your monitoring did not notice: {d.name} {d.detail}")
        passed = (detected and p.fault_state == FaultState.RESTORED and final is not None and final.ok
                  and (safety is None or safety.verdict != "violated") and self._trip is None and not missed)
        verdict = p.verdict = "pass" if passed else "fail"
        self._stage(Stage.DONE, f"verdict: {verdict}")
        workflow.upsert_search_attributes([Attr.VERDICT.value_set(verdict)])
        info = workflow.info()
        return ChaosReport(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            subject=inp.subject.name,
            project=project,
            fault=inp.fault,
            fault_label=p.fault_label,
            fault_params=inp.fault_params,
            target=targets[0],
            targets=targets,
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
            safety=safety,
            stopped=self._trip,
            detectors=detectors,
        )

    def _detectors(self, inp: ChaosInput, detection: DetectResult | None) -> list[DetectorResult]:
        """Every detector's time to detect, ours first, then the user's in the order they were given."""
        p = self._progress
        ours = DetectorResult(name="our probe", ours=True, fired=bool(detection and detection.detected),
                              fired_at=detection.detected_at if detection else None,
                              time_to_detect_s=p.time_to_detect_s,
                              detail="" if detection else "detection never concluded")
        theirs = [self._theirs.get(d.name) or DetectorResult(
            name=d.name, fired=False, detail="never asked: the fault was never injected" if self._injected is None
            else "did not conclude: the run was cut short") for d in inp.detectors]
        return [ours, *theirs]

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
