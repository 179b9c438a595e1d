"""Workflow logic against a real Temporal dev server, with test activities standing in for Docker and etcd.

The fake cluster below records every inject and restore, so each test asserts what a user cares about: which
node was hit, how often, and that it came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import math
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Replayer

from activities.reaper import wait_until_run_closes
from durable_chaos.cli.render import progress_view, stage_strip
from durable_chaos.contracts import (
    Attr,
    ChaosInput,
    CheckResult,
    ChooseRequest,
    DetectRequest,
    DetectResult,
    DiagnoseRequest,
    Diagnosis,
    ErrorType,
    Evidence,
    EvidenceRequest,
    FaultEffect,
    FaultPlan,
    FaultRequest,
    FaultState,
    GuardReport,
    InjectResult,
    LoadRequest,
    LoadWindow,
    MemberHealth,
    OrphanedFault,
    PreflightRequest,
    PreflightResult,
    ReapAction,
    RestoreResult,
    SafetyReport,
    SafetyRequest,
    Step,
    SubjectRef,
    TargetChoice,
    Trip,
    WaitHealthyRequest,
    report_of_failure,
)
from durable_chaos.contracts.campaign import CampaignCell, CampaignInput
from durable_chaos.ids import fault_guard_id
from durable_chaos.runtime.worker import build_worker
from tests.conftest import walk_to_end, walk_to_gate
from workflows.campaign import ChaosCampaignWorkflow
from workflows.chaos import ChaosDemoWorkflow
from workflows.policy import HEARTBEAT

SERVICES = ["n1", "n2", "n3"]


def now() -> datetime:
    return datetime.now(timezone.utc)


class FakeCluster:
    """Stands in for Docker + the subject. Knobs make a chosen stage misbehave."""

    def __init__(self):
        self.down: set[str] = set()
        self.injects: list[str] = []
        self.restores: list[str] = []
        self.inject_failures_left = 0
        self.preflight_error: str | None = None
        self.detect_error = False
        self.detect_forever = False
        self.diagnose_forever = False
        self.diagnose_until_restored = False  # the diagnosis answers once a restore has begun (at most 5 s)
        self.diagnose_after_safety_s: float | None = None  # ... or this long after the safety check was asked
        self.diagnosis_times: list[datetime] = []
        self.restore_delay = 0.0
        self.late_inject = False  # an inject attempt that had timed out lands right after the first restore
        self.verify_dies_once = False  # the first verify attempt ends as one whose worker died
        self.inject_times: list[datetime] = []
        self.restore_times: list[datetime] = []
        self.reaped: list[str] = []  # restored by a fault guard (or the reaper), not by the run itself
        self.safety = SafetyReport(verdict="ok")  # what the safety check finds
        self.safety_requests: list[SafetyRequest] = []
        self.no_effect: set[str] = set()  # fault kinds that change nothing (their confirm finds no sign)
        self.chosen: list[ChooseRequest] = []
        self.window_fails: list[float] = []  # the next windows each fail after this many seconds (0: at once)
        self.window_times: list[tuple[datetime, datetime, bool]] = []  # (start, end, failed) of every window
        self.windows_lost: list[float] = []  # the next windows are each lost with their worker after this many s
        self.window_attempts: list[int] = []  # the attempt number of every window, in order
        self.window_trip = None  # (start, end) -> the Trip a window reports as it ends, or None

    def check(self) -> CheckResult:
        members = [MemberHealth(service=s, healthy=s not in self.down) for s in SERVICES]
        bad = [f"{m.service}: down" for m in members if not m.healthy]
        return CheckResult(at=now(), ok=not bad, members=members, roles={"leader": "n1"}, violations=bad)

    def activities(self):
        cluster = self

        @activity.defn(name="preflight")
        async def preflight(req: PreflightRequest) -> PreflightResult:
            if cluster.preflight_error:
                raise ApplicationError(cluster.preflight_error, type=ErrorType.BAD_INPUT, non_retryable=True)
            baseline = cluster.check()
            # As the real preflight resolves it (faults.target_choice), for the targets these tests use.
            must = {"leader": [baseline.roles["leader"]], None: [], "random": []}.get(req.target, [req.target])
            return PreflightResult(subject="fake", project="fake", services=SERVICES, targets=SERVICES,
                                   started_subject=False, baseline=baseline, fault_label=f"{req.fault} (fake)",
                                   choice=TargetChoice(must=must, pool=[s for s in SERVICES if s not in must],
                                                       count=req.count))

        @activity.defn(name="run_load_window")
        async def run_load_window(req: LoadRequest) -> LoadWindow:
            start = now()
            cluster.window_attempts.append(activity.info().attempt)
            if cluster.windows_lost and not cluster.window_fails and activity.info().attempt == 1:
                await asyncio.sleep(cluster.windows_lost.pop(0))
                cluster.window_times.append((start, now(), True))
                raise ApplicationError("worker lost", type="WorkerLost")  # what a timed-out attempt is: retryable
            if cluster.window_fails:
                await asyncio.sleep(cluster.window_fails.pop(0))
                cluster.window_times.append((start, now(), True))
                raise ApplicationError("window lost", non_retryable=True)
            await asyncio.sleep(req.window_s)
            cluster.window_times.append((start, now(), False))
            ops = 10 if not cluster.down else 3
            end = now()
            trip = cluster.window_trip(start, end) if cluster.window_trip else None
            return LoadWindow(start=start, end=end, ops=ops, errors=0, ops_per_s=ops / req.window_s, tripped=trip)

        @activity.defn(name="inject_fault")
        async def inject_fault(req: FaultRequest) -> InjectResult:
            cluster.injects.extend(req.members)
            cluster.inject_times.append(now())
            if cluster.inject_failures_left > 0:
                cluster.inject_failures_left -= 1
                raise RuntimeError("docker hiccup")  # retryable
            cluster.down.update(req.members)
            return InjectResult(target=req.target, container=f"c-{req.target}", injected_at=now())

        @activity.defn(name="detect_violation")
        async def detect_violation(req: DetectRequest) -> DetectResult:
            if cluster.detect_error:
                raise ApplicationError("probe exploded", non_retryable=True)
            while cluster.detect_forever:
                await asyncio.sleep(0.1)
                activity.heartbeat()
            result = cluster.check()
            return DetectResult(detected=not result.ok, detected_at=now(), first_violation=result, checks=1,
                                timeline=[result])

        @activity.defn(name="gather_evidence")
        async def gather_evidence(req: EvidenceRequest) -> Evidence:
            return Evidence(subject="fake", services=SERVICES, containers=[], timeline=req.detect.timeline,
                            health_now=cluster.check())

        @activity.defn(name="diagnose")
        async def diagnose(req: DiagnoseRequest) -> Diagnosis:
            while cluster.diagnose_forever:
                await asyncio.sleep(0.1)
                activity.heartbeat()
            for _ in range(50 if cluster.diagnose_until_restored else 0):
                if cluster.restores:
                    break
                await asyncio.sleep(0.1)
            if cluster.diagnose_after_safety_s is not None:
                await until(lambda: cluster.safety_requests)
                await asyncio.sleep(cluster.diagnose_after_safety_s)
            cluster.diagnosis_times.append(now())
            sick = [m.service for m in req.evidence.health_now.members if not m.healthy]
            return Diagnosis(source="rules", affected_nodes=sick, summary="x", root_cause="y", evidence=[],
                             suggested_actions=[], confidence=0.5)

        @activity.defn(name="restore_fault")
        async def restore_fault(req: FaultRequest) -> RestoreResult:
            cluster.restores.extend(req.members)
            cluster.restore_times.append(now())
            await asyncio.sleep(cluster.restore_delay)
            in_effect = set(req.members) & cluster.down
            cluster.down.difference_update(req.members)
            if cluster.late_inject:
                cluster.late_inject = False
                cluster.down.update(req.members)
            return RestoreResult(target=req.target, started_at=now(), already_up=not in_effect)

        @activity.defn(name="wait_healthy")
        async def wait_healthy(req: WaitHealthyRequest) -> CheckResult:
            if cluster.verify_dies_once:
                cluster.verify_dies_once = False
                raise ApplicationError("worker lost", type="WorkerLost")  # what a timed-out attempt is: retryable
            check = cluster.check()
            if not check.ok:  # as the real one, which polls until the restore timeout first
                raise ApplicationError("not healthy after restore", type=ErrorType.SUBJECT_UNHEALTHY)
            return check

        @activity.defn(name="reap_fault")
        async def reap_fault(orphan: OrphanedFault) -> ReapAction:
            target = orphan.fault.target
            cluster.reaped.append(target)
            action = "restored" if target in cluster.down else "already healthy"
            cluster.down.discard(target)
            return ReapAction(workflow_id=orphan.workflow_id, run_id=orphan.run_id, target=target, action=action)

        @activity.defn(name="confirm_fault")
        async def confirm_fault(req: FaultRequest) -> FaultEffect:
            if req.fault in cluster.no_effect:
                return FaultEffect(took_effect=False)
            return FaultEffect(took_effect=True, evidence=[f"{m}: down" for m in req.members])

        @activity.defn(name="choose_targets")
        async def choose_targets(req: ChooseRequest) -> FaultPlan:
            cluster.chosen.append(req)
            target = req.step.target
            must = {"leader": ["n1"], None: [], "random": [], "follower": []}.get(target, [target])
            pool = [s for s in SERVICES
                    if s not in must and s not in req.busy and not (target == "follower" and s == "n1")]
            return FaultPlan(choice=TargetChoice(must=must, pool=pool, count=req.step.count),
                             fault_label=f"{req.step.fault} (fake)")

        @activity.defn(name="check_safety")
        async def check_safety(req: SafetyRequest) -> SafetyReport:
            cluster.safety_requests.append(req)
            return cluster.safety

        # The guard's watch only talks to Temporal: the real one.
        return [preflight, run_load_window, inject_fault, detect_violation, gather_evidence, diagnose,
                restore_fault, wait_healthy, reap_fault, wait_until_run_closes, check_safety, confirm_fault,
                choose_targets]


def fast_input(**kw) -> ChaosInput:
    return ChaosInput(subject=SubjectRef(name="etcd", project="fake"), countdown_s=1, load_window_s=0.05, **kw)


async def until(predicate, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def run_chaos(client, cluster: FakeCluster, inp: ChaosInput, *, cancel_when=None, during=None):
    """Run one workflow against the fake cluster. `during(handle)` drives it (updates, cancel) while it runs."""
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    # The product's worker (heartbeats, sandbox, timeouts) with the fake cluster's activities.
    async with build_worker(client, task_queue=queue, activity_functions=cluster.activities()):
        handle = await client.start_workflow(ChaosDemoWorkflow.run, inp, id=f"unit-{uuid.uuid4().hex[:8]}",
                                             task_queue=queue)
        if cancel_when is not None:
            await until(lambda: cancel_when(cluster))
            await handle.cancel()
        if during is not None:
            await during(handle)
        try:
            return await handle.result(), handle
        except WorkflowFailureError as err:
            # A fail verdict fails the run (so the web UI's list shows it): its report is the failure's detail.
            return report_of_failure(err) or err, handle


async def test_restore_runs_after_success(client):
    cluster = FakeCluster()
    report, _ = await run_chaos(client, cluster, fast_input(target="n2"))
    assert report.verdict == "pass", report.reasons
    assert cluster.injects == ["n2"] and cluster.restores == ["n2"]
    assert report.fault_state == FaultState.RESTORED
    assert report.diagnosis is not None and report.diagnosis.correct is True, report.reasons
    assert report.time_to_detect_s is not None and report.time_to_detect_s >= 0


async def test_a_slow_activity_that_never_heartbeats_is_not_taken_for_a_dead_worker(client):
    """The heartbeat timeout is short (a dead worker is noticed fast), so the worker heartbeats for every activity:
    a restore that takes over twice the timeout and never heartbeats itself completes on its first attempt."""
    cluster = FakeCluster()
    cluster.restore_delay = HEARTBEAT.total_seconds() * 2 + 0.5
    async with asyncio.timeout(60):  # without the worker's heartbeats the restore is retried forever
        report, handle = await run_chaos(client, cluster, fast_input(target="n2"))
    assert report.verdict == "pass", report.reasons
    attempts = [e.activity_task_started_event_attributes.attempt async for e in handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert cluster.restores == ["n2"] and max(attempts) == 1, attempts


async def test_a_late_inject_attempt_landing_after_the_restore_is_undone_again(client):
    """A starved worker's inject attempt times out on the server while its `docker kill` is still on its way; the
    kill lands after the run's restore. The run sees the subject unhealthy, undoes the fault again and says so."""
    cluster = FakeCluster()
    cluster.late_inject = True
    report, _ = await run_chaos(client, cluster, fast_input(target="n2"))
    assert cluster.restores == ["n2", "n2"] and not cluster.down
    assert report.verdict == "pass", report.reasons
    assert any("undone again" in r for r in report.reasons), report.reasons


async def test_a_worker_that_dies_while_verifying_does_not_fail_the_run(client):
    """The verify after the restore is retried when its worker dies (its attempt times out), not only undone again."""
    cluster = FakeCluster()
    cluster.verify_dies_once = True
    report, _ = await run_chaos(client, cluster, fast_input(target="n2"))
    assert report.verdict == "pass", report.reasons
    assert cluster.restores == ["n2"] and not cluster.down


async def test_count_hits_the_leader_and_a_drawn_member_and_restores_both(client):
    cluster = FakeCluster()
    report, handle = await run_chaos(client, cluster, fast_input(target="leader", count=2, allow_quorum_loss=True))
    assert report.verdict == "pass", report.reasons
    assert report.targets[0] == "n1" and len(set(report.targets)) == 2 and report.target == "n1"
    assert sorted(cluster.injects) == sorted(report.targets) == sorted(cluster.restores)
    assert report.diagnosis.correct is True  # graded against both members hit
    assert report.fault_label == "kill (fake)"
    # The search attribute names the kind with its parameters (the label preflight validated).
    assert (await handle.describe()).typed_search_attributes.get(Attr.FAULT) == "kill (fake)"


async def test_a_safety_violation_fails_the_run_and_says_why(client):
    cluster = FakeCluster()
    cluster.safety = SafetyReport(verdict="violated", reasons=["lost writes: 1 acknowledged writes lost"], lost_writes=1)
    report, _ = await run_chaos(client, cluster, fast_input(target="n2"))
    assert report.verdict == "fail"
    assert report.safety.lost_writes == 1
    assert report.reasons[-1] == "data safety violated: lost writes: 1 acknowledged writes lost", report.reasons
    # Checked after the restore, told when the fault was on, and with every window's part to expect.
    req = cluster.safety_requests[0]
    assert cluster.restore_times[0] < req.fault_ended_at and req.fault_started_at < req.fault_ended_at
    assert req.windows == len(report.load.windows) > 0


async def test_restore_runs_after_a_failing_stage(client):
    cluster = FakeCluster()
    cluster.detect_error = True
    report, _ = await run_chaos(client, cluster, fast_input(target="n3"))
    assert report.verdict == "fail"
    assert any("stage detect failed" in r for r in report.reasons), report.reasons
    assert cluster.restores == ["n3"] and not cluster.down
    assert report.fault_state == FaultState.RESTORED


async def test_cancel_during_detection_restores(client):
    cluster = FakeCluster()
    cluster.detect_forever = True
    err, handle = await run_chaos(client, cluster, fast_input(target="n1"), cancel_when=lambda c: c.down)
    assert isinstance(err, WorkflowFailureError)
    assert cluster.restores == ["n1"] and not cluster.down
    desc = await handle.describe()
    assert desc.status.name == "CANCELED"


async def test_random_target_is_never_rechosen_on_retry_or_replay(client):
    cluster = FakeCluster()
    cluster.inject_failures_left = 2  # two failed attempts, then success
    report, handle = await run_chaos(client, cluster, fast_input())
    assert report.verdict == "pass", report.reasons
    assert len(cluster.injects) == 3 and len(set(cluster.injects)) == 1, cluster.injects
    assert cluster.restores == [report.target] == [cluster.injects[0]]
    # Replaying the recorded history makes exactly the same decisions (no non-determinism error).
    history = await handle.fetch_history()
    await Replayer(workflows=[ChaosDemoWorkflow], data_converter=client.data_converter).replay_workflow(history)


@pytest.mark.parametrize("bad", ["unknown target", "unknown subject"])
async def test_bad_input_kills_nothing(client, bad):
    cluster = FakeCluster()
    cluster.preflight_error = bad
    err, _ = await run_chaos(client, cluster, fast_input())
    assert isinstance(err, WorkflowFailureError)
    assert err.cause.cause.type == ErrorType.BAD_INPUT
    assert cluster.injects == [] and cluster.restores == []


async def test_target_outside_the_subject_is_refused_before_injection(client):
    cluster = FakeCluster()
    err, _ = await run_chaos(client, cluster, fast_input(target="n9"))
    assert isinstance(err, WorkflowFailureError)
    assert cluster.injects == []


async def test_no_kill_before_a_load_baseline_even_without_countdown(client):
    cluster = FakeCluster()
    inp = fast_input(target="n2")
    inp.countdown_s, inp.load_window_s = 0, 1.0
    report, _ = await run_chaos(client, cluster, inp)
    assert report.verdict == "pass", report.reasons
    first = report.load.windows[0]
    assert first.end <= cluster.inject_times[0]
    assert report.load.baseline_ops_s == first.ops_per_s


async def test_cancel_during_countdown_kills_nothing(client):
    cluster = FakeCluster()
    inp = fast_input(target="n1")
    inp.countdown_s = 30
    err, handle = await run_chaos(client, cluster, inp, during=_cancel_when_counting_down)
    assert isinstance(err, WorkflowFailureError)
    assert cluster.injects == [] and cluster.restores == []


async def _cancel_when_counting_down(handle):
    while (await handle.query(ChaosDemoWorkflow.progress)).stage.value != "countdown":
        await asyncio.sleep(0.05)
    await handle.cancel()


async def test_cancel_while_restoring_still_finishes_the_restore(client):
    cluster = FakeCluster()
    cluster.restore_delay = 1.0
    err, handle = await run_chaos(client, cluster, fast_input(target="n2"), cancel_when=lambda c: c.restores)
    assert isinstance(err, WorkflowFailureError)
    assert cluster.restores and not cluster.down, "the restore in flight was abandoned"
    assert (await handle.describe()).status.name == "CANCELED"


async def test_abort_restores_at_once_and_finishes_with_a_report(client):
    cluster = FakeCluster()
    cluster.detect_forever = True

    async def abort_when_down(handle):
        await until(lambda: cluster.down)
        progress = await handle.execute_update(ChaosDemoWorkflow.abort, "operator says stop")
        # The update returns only once the node is back.
        assert progress.fault_state == FaultState.RESTORED
        assert not cluster.down

    report, _ = await run_chaos(client, cluster, fast_input(target="n3"), during=abort_when_down)
    assert report.verdict == "fail"
    assert "aborted before detection: operator says stop" in report.reasons, report.reasons
    assert cluster.restores == ["n3"]


@pytest.mark.parametrize("cut", ["abort", "deadline"])
async def test_a_run_cut_before_detection_says_so_not_that_detection_timed_out(client, cut):
    """Held at the detect gate after the kill, then aborted (or cut at the fault deadline): detection never ran."""
    cluster = FakeCluster()

    async def hold_at_detect(handle):
        await walk_to_gate(handle, "detect")
        if cut == "abort":
            await handle.execute_update(ChaosDemoWorkflow.abort, "game day over")

    inp = fast_input(target="n2", interactive=True, max_fault_s=120 if cut == "abort" else 2)
    report, _ = await run_chaos(client, cluster, inp, during=hold_at_detect)
    expected = ("aborted before detection: game day over" if cut == "abort"
                else "fault deadline (2s) reached before detection: restoring now")
    assert expected in report.reasons, report.reasons
    assert not any("not detected" in r for r in report.reasons), report.reasons
    assert report.fault_state == FaultState.RESTORED and cluster.restores == ["n2"]


async def test_a_stage_that_never_ends_is_cut_at_the_fault_deadline(client):
    cluster = FakeCluster()
    cluster.detect_forever = True
    report, _ = await run_chaos(client, cluster, fast_input(target="n1", max_fault_s=3))
    assert report.fault_state == FaultState.RESTORED and not cluster.down
    assert any("fault deadline (3s) reached before detection" in r for r in report.reasons), report.reasons
    assert not any("not detected" in r for r in report.reasons), report.reasons
    # Restore started at the deadline: not before it, and not much after (worker + server latency only).
    held = (cluster.restore_times[0] - cluster.inject_times[0]).total_seconds()
    assert 2.5 <= held <= 6, held


async def test_the_fault_is_undone_while_the_diagnosis_is_made(client):
    """A diagnosis reads only the evidence gathered while the fault was on: Claude's answer (up to the diagnosis
    deadline, a minute by default) is not worth a member down, so the undo goes on meanwhile."""
    cluster = FakeCluster()
    cluster.diagnose_until_restored = True
    report, _ = await run_chaos(client, cluster, fast_input(target="n2"))
    assert report.verdict == "pass", report.reasons
    assert cluster.restore_times[0] < cluster.diagnosis_times[0], "the restore waited for the diagnosis"
    assert report.diagnosis is not None and report.diagnosis.affected_nodes == ["n2"] and report.diagnosis.correct


async def test_the_live_view_never_goes_back_a_stage_while_a_late_diagnosis_is_awaited(client):
    cluster = FakeCluster()
    cluster.diagnose_after_safety_s = 1.5  # Claude still thinking after the undo, the verify and the safety check
    seen: list[tuple[str, str]] = []
    strips: list[tuple[str, bool, str]] = []  # (stage, diagnosis in, the strip's text)

    async def watch(handle):
        while True:
            p = await handle.query(ChaosDemoWorkflow.progress)
            if not seen or seen[-1] != (p.stage.value, p.message):
                seen.append((p.stage.value, p.message))
            strips.append((p.stage.value, p.diagnosis is not None, stage_strip(p).plain))
            if p.stage.value in ("done", "failed"):
                return
            await asyncio.sleep(0.05)

    report, _ = await run_chaos(client, cluster, fast_input(target="n2"), during=watch)
    assert report.verdict == "pass" and report.diagnosis is not None, report.reasons
    order = ["preflight", "countdown", "inject", "detect", "diagnose", "restore", "verify", "safety", "done"]
    stages = [stage for stage, _ in seen]
    assert stages == sorted(stages, key=order.index), seen
    assert any("waiting for the diagnosis" in message for _, message in seen), seen
    # The strip ticks "diagnose" only once the diagnosis is in: until then it shows it still running.
    after = [(stage, strip) for stage, diagnosed, strip in strips
             if not diagnosed and stage in ("restore", "verify", "safety")]
    assert after and all("✓ diagnose" not in strip and "… diagnose" in strip for _, strip in after), after
    assert "✓ diagnose" in strips[-1][2], strips[-1]


async def test_a_diagnosis_that_never_ends_holds_no_fault_and_ends_at_its_own_deadline(client):
    cluster = FakeCluster()
    cluster.diagnose_forever = True  # a worker stuck in it: the activity's own bounds end it (policy.diagnose)
    report, _ = await run_chaos(client, cluster, fast_input(target="n1", max_fault_s=3, diagnosis_deadline_s=0.5))
    assert report.fault_state == FaultState.RESTORED and not cluster.down
    held = (cluster.restore_times[0] - cluster.inject_times[0]).total_seconds()
    assert held < 2.5, f"the fault was held {held:.1f}s: the undo waited for the diagnosis"
    assert not any("fault deadline" in r for r in report.reasons), report.reasons
    assert any(r.startswith("diagnosis of") and "failed" in r for r in report.reasons), report.reasons
    assert report.diagnosis is None


async def test_interactive_run_waits_for_advance_before_each_stage(client):
    cluster = FakeCluster()
    released = []

    async def press_enter(handle):
        while True:
            progress = await handle.query(ChaosDemoWorkflow.progress)
            if progress.stage.value == "done":
                return
            if progress.waiting_for is not None:
                # Nothing moves while the run is held.
                before = (len(cluster.injects), len(cluster.restores))
                await asyncio.sleep(0.3)
                assert (len(cluster.injects), len(cluster.restores)) == before
                released.append(await handle.execute_update(ChaosDemoWorkflow.advance))
            await asyncio.sleep(0.05)

    report, _ = await run_chaos(client, cluster, fast_input(target="n2", interactive=True), during=press_enter)
    assert report.verdict == "pass", report.reasons
    assert [s.value for s in released] == ["countdown", "inject", "detect", "diagnose"]


async def test_advance_is_refused_when_the_run_is_not_waiting(client):
    from temporalio.client import WorkflowUpdateFailedError

    cluster = FakeCluster()
    cluster.detect_forever = True

    async def advance_too_early(handle):
        await until(lambda: cluster.down)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ChaosDemoWorkflow.advance)
        await handle.execute_update(ChaosDemoWorkflow.abort, "done testing")

    report, _ = await run_chaos(client, cluster, fast_input(target="n1"), during=advance_too_early)
    assert cluster.restores == ["n1"]


def _summary(event) -> str:
    return json.loads(event.user_metadata.summary.data) if event.user_metadata.HasField("summary") else ""


async def test_countdown_is_one_durable_timer_and_the_live_view_counts_down_from_its_end(client):
    cluster = FakeCluster()
    inp = fast_input(target="n2")
    # Windows of 2 s (the fake load does not heartbeat, so not longer): the load's own events stay few.
    inp.countdown_s, inp.load_window_s = 20, 2.0
    during_countdown: list = []

    async def look_during_countdown(handle):
        while (progress := await handle.query(ChaosDemoWorkflow.progress)).stage.value != "countdown":
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # a few seconds into the countdown
        progress = await handle.query(ChaosDemoWorkflow.progress)
        console = Console(record=True, width=120)
        console.print(progress_view(progress, "url"))
        during_countdown.append((progress, now(), console.export_text()))

    report, handle = await run_chaos(client, cluster, inp, during=look_during_countdown)
    assert report.verdict == "pass", report.reasons
    events = (await handle.fetch_history()).events
    timers = [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
              and _summary(e).startswith("countdown")]
    print(f"countdown 20: {len(events)} events, {len(timers)} countdown timer(s)")
    assert len(timers) == 1, [_summary(e) for e in timers]
    assert timers[0].timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() == timedelta(seconds=20)
    # The kill still waited the whole countdown, in workflow (server) time.
    inject = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                  and e.activity_task_scheduled_event_attributes.activity_type.name == "inject_fault")
    assert (inject.event_time.ToDatetime() - timers[0].event_time.ToDatetime()).total_seconds() >= 20
    assert len(events) < 190, len(events)  # 253 with a timer per second, 134 with one (+~12 for the safety check)

    # The live view counts down from the timer's end, on the viewer's clock; countdown_left stays meaningful.
    ((progress, at, view),) = during_countdown
    assert progress.countdown_ends_at is not None and 1 <= progress.countdown_left <= 20
    left = (progress.countdown_ends_at - at).total_seconds()
    assert 14 < left < 18, left
    assert re.search(rf"countdown +{math.ceil(left)} ", view), view


async def test_the_memo_keeps_the_runs_facts_as_it_moves(client):
    """Facts in the memo are readable on a closed run with no worker (current details and queries need one)."""
    cluster = FakeCluster()
    memos = []

    async def look_at_each_gate(handle):
        for gate in ("countdown", "detect"):
            await walk_to_gate(handle, gate)
            memos.append(await (await handle.describe()).memo())
        await walk_to_end(handle)

    report, handle = await run_chaos(client, cluster, fast_input(target="n2", interactive=True),
                                     during=look_at_each_gate)
    assert report.verdict == "pass", report.reasons
    before_kill, held_at_detect = memos
    assert before_kill == {"subject": "etcd", "fault": "kill", "fault_label": "kill (fake)", "target": "n2",
                           "targets": ["n2"], "fault_state": "none", "stage": "preflight"}
    assert held_at_detect == {**before_kill, "fault_state": "injected", "stage": "inject"}
    assert await (await handle.describe()).memo() == {
        **before_kill, "fault_state": "restored", "stage": "done", "verdict": "pass",
        "time_to_detect_s": report.time_to_detect_s, "time_to_restore_s": report.time_to_restore_s,
        "diagnosis_correct": True,
    }


async def guard_report(client, handle) -> GuardReport:
    """What the fault guard of a run did; it closes right after the run does."""
    run_id = handle.result_run_id or (await handle.describe()).run_id
    guard = client.get_workflow_handle(fault_guard_id(handle.id, run_id), result_type=GuardReport)
    return await asyncio.wait_for(guard.result(), 30)


async def test_a_terminated_run_is_restored_by_its_fault_guard(client):
    """Terminate runs none of the run's code, so its `finally` never restores: the guard it started does."""
    cluster = FakeCluster()
    guarded = []

    async def terminate_at_detect(handle):
        await walk_to_gate(handle, "detect")  # n2 is down, the run holds
        await handle.terminate(reason="an operator's terminate")
        guarded.append(await guard_report(client, handle))

    err, _ = await run_chaos(client, cluster, fast_input(target="n2", interactive=True), during=terminate_at_detect)
    assert isinstance(err, WorkflowFailureError)
    assert cluster.injects == ["n2"] and cluster.restores == [] and cluster.reaped == ["n2"] and not cluster.down
    (report,) = guarded
    assert report.run_status == "TERMINATED" and report.fault_state == FaultState.INJECTED
    assert report.action.action == "restored" and report.action.healthy_after is True


def suspended(qualname: str) -> list:
    """Every coroutine of `qualname` still suspended in this process (other objects count as coroutines too, such
    as aiohttp's request context managers: only real coroutines have a frame)."""
    return [c for c in gc.get_objects() if inspect.iscoroutine(c) and c.__qualname__ == qualname and c.cr_frame]


async def test_a_run_its_worker_dropped_runs_none_of_its_code_on_another_event_loop(client):
    """A worker that stops drops the runs still in its cache without ending them, and the garbage collector later
    closes their coroutines on whatever thread and event loop run then. The run's undo must not start there: in CI
    it started on another run's event loop, which then restored a member that run never faulted. (The dropped
    run's undo belongs to the worker that replays it, or to its guard.)"""
    async def terminate_at_detect(handle):
        await walk_to_gate(handle, "detect")  # n2 is down, the run holds with its fault on, cached on the worker
        await handle.terminate(reason="an operator's terminate")
        await guard_report(client, handle)

    # The worker stops and still holds the run, suspended at its fault (with any other run dropped so far in this
    # process). Unless the server evicted it first: a workflow task of the last `advance` completing just after the
    # terminate is answered "not found" and the SDK closes the run itself (CI, once): then there is nothing dropped,
    # and the scenario is run again.
    for _ in range(3):
        cluster = FakeCluster()
        await run_chaos(client, cluster, fast_input(target="n2", interactive=True), during=terminate_at_detect)
        if dropped := suspended("ChaosDemoWorkflow.run"):
            break
    assert dropped
    # Close them as the garbage collector does, while another event loop (this test's) is running.
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks(loop)
    for run in dropped:
        run.close()
    started_here = asyncio.all_tasks(loop) - before
    assert not started_here, started_here
    await asyncio.sleep(0.2)
    assert cluster.restores == [] and cluster.reaped == ["n2"]


async def test_a_campaign_its_worker_dropped_touches_no_other_workflow(client):
    """The same for a campaign: a cell's ending, run by the collector outside the campaign's own workflow, read that
    workflow's clock and set its details (the web UI's text) - or, as here with no workflow running, raised."""
    cluster = FakeCluster()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    run = fast_input(target="n2", interactive=True)  # the cell's run holds at its first gate
    cell = CampaignCell(key="etcd · kill · n2", subject="etcd", project=f"unit-{uuid.uuid4().hex[:8]}", fault="kill",
                        target="n2", run_input=run)
    async with build_worker(client, task_queue=queue, activity_functions=cluster.activities()):
        handle = await client.start_workflow(ChaosCampaignWorkflow.run, CampaignInput(name="dropped", cells=[cell]),
                                             id=f"unit-{uuid.uuid4().hex[:8]}", task_queue=queue)
        child = client.get_workflow_handle(cell.project)
        for _ in range(100):  # the campaign starts its cell's run soon after it starts
            with contextlib.suppress(RPCError):
                await walk_to_gate(child, "countdown")
                break
            await asyncio.sleep(0.1)
    try:
        dropped = suspended("ChaosCampaignWorkflow._run_cell")
        assert dropped
        for cell_run in dropped:
            cell_run.close()  # raised "Not in workflow event loop" from the cell's `finally`
    finally:
        for h in (handle, child):
            await h.terminate(reason="test over")


async def test_a_run_that_restores_its_own_fault_leaves_its_guard_nothing_to_do(client):
    cluster = FakeCluster()
    guarded = []

    async def wait_for_the_guard(handle):
        await handle.result()
        guarded.append(await guard_report(client, handle))

    report, _ = await run_chaos(client, cluster, fast_input(target="n1"), during=wait_for_the_guard)
    assert report.verdict == "pass" and cluster.restores == ["n1"] and cluster.reaped == []
    (guard,) = guarded
    assert guard.run_status == "COMPLETED" and guard.fault_state == FaultState.RESTORED and guard.action is None


def _index(events, kind, activity: str | None = None, after: int = 0) -> int:
    """The position of the first event of `kind` from `after` on (for an activity event, of that activity)."""
    names = {}  # scheduled event id -> activity name
    for i, e in enumerate(events):
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        if i < after or e.event_type != kind:
            continue
        if activity is None:
            return i
        attrs = {EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: None,
                 EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes"}[kind]
        scheduled = e.event_id if attrs is None else getattr(e, attrs).scheduled_event_id
        if names.get(scheduled) == activity:
            return i
    raise AssertionError(f"no {EventType.Name(kind)} {activity or ''} in the history")


async def test_the_kill_and_the_diagnosis_wait_for_no_round_trip_they_do_not_need(client):
    """Every stage boundary is a round trip to the server: a workflow task, then the next activity's dispatch
    (bench: overhead). The first fault's guard starts beside the countdown, so the kill follows the countdown's end
    in one workflow task; the evidence for the diagnosis is gathered while the fault's effect is confirmed."""
    cluster = FakeCluster()
    report, handle = await run_chaos(client, cluster, fast_input(target="n2"))
    assert report.verdict == "pass", report.reasons
    assert report.diagnosis is not None and report.diagnosis.affected_nodes == ["n2"]
    events = (await handle.fetch_history()).events
    countdown = next(e.timer_started_event_attributes.timer_id for e in events
                     if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and _summary(e).startswith("countdown"))
    ended = next(i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
                 and e.timer_fired_event_attributes.timer_id == countdown)
    assert _index(events, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED) < ended  # the guard was up
    kill = _index(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, "inject_fault")
    tasks = [e for e in events[ended:kill] if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    assert len(tasks) == 1, f"{len(tasks)} workflow tasks between the countdown's end and the kill"
    gather = _index(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, "gather_evidence")
    confirmed = _index(events, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, "confirm_fault")
    assert gather < confirmed


async def test_a_run_terminated_in_its_countdown_leaves_its_guard_nothing_to_restore(client):
    """The guard is up from the countdown on; a run that ends before its kill left nothing on."""
    cluster = FakeCluster()
    guarded = []

    async def terminate_in_the_countdown(handle):
        while (await handle.query(ChaosDemoWorkflow.progress)).stage.value != "countdown":
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await handle.terminate(reason="an operator's terminate")
        guarded.append(await guard_report(client, handle))

    inp = fast_input(target="n2")
    inp.countdown_s = 10
    err, _ = await run_chaos(client, cluster, inp, during=terminate_in_the_countdown)
    assert isinstance(err, WorkflowFailureError)
    (report,) = guarded
    assert report.run_status == "TERMINATED" and report.fault_state == FaultState.NONE and report.action is None
    assert cluster.injects == [] and cluster.restores == [] and cluster.reaped == []


# -- experiments with steps ------------------------------------------------------------------------------------------

def steps_input(*steps, **kw) -> ChaosInput:
    return fast_input(steps=[Step.model_validate(s) for s in steps], **kw)


async def test_steps_run_in_order_each_fault_is_undone_before_the_next_and_each_has_its_times(client):
    cluster = FakeCluster()
    report, _ = await run_chaos(client, cluster, steps_input(
        {"fault": {"target": "leader", "duration_s": 1}}, {"until_steady": True},
        {"fault": {"target": "follower"}}))
    assert report.verdict == "pass", report.reasons
    assert cluster.injects[0] == "n1" and cluster.injects[1] in ("n2", "n3")
    assert cluster.restores == cluster.injects  # each undone once, in the order they went in
    assert cluster.restore_times[0] < cluster.inject_times[1]  # healed before the follower was hit
    assert [(s.step, s.targets) for s in report.steps] == [(1, ["n1"]), (3, [cluster.injects[1]])]
    assert all(s.time_to_detect_s is not None and s.time_to_restore_s is not None for s in report.steps)
    # The second fault read the roles when its step began, and drew no member a fault was on.
    assert cluster.chosen[0].step.target == "follower" and cluster.chosen[0].busy == []


async def test_two_faults_in_parallel_lanes_are_both_undone_when_the_run_is_cancelled(client):
    cluster = FakeCluster()
    report, handle = await run_chaos(client, cluster, steps_input(
        {"lanes": [[{"fault": {"target": "n2", "duration_s": 60}}], [{"fault": {"target": "n3", "duration_s": 60}}]]},
        max_fault_s=90), cancel_when=lambda c: c.down == {"n2", "n3"})
    assert isinstance(report, WorkflowFailureError)  # cancelled
    assert sorted(cluster.restores) == ["n2", "n3"] and not cluster.down
    # Each fault had a guard of its own, started before it went in.
    run_id = (await handle.describe()).run_id
    for n in (1, 2):
        guard = await client.get_workflow_handle(fault_guard_id(handle.id, run_id, n)).describe()
        assert guard.workflow_type == "FaultGuardWorkflow"


async def test_a_random_schedule_with_a_seed_injects_the_same_faults_at_the_same_offsets(client):
    spec = {"random": {"duration_s": 12, "kinds": ["kill", "pause"], "every_s": 4, "hold_s": 0.5, "seed": 11}}
    runs = []
    for _ in range(2):
        cluster = FakeCluster()
        report, _ = await run_chaos(client, cluster, steps_input(spec))
        start = report.steps[0].injected_at
        runs.append([(s.fault, s.targets, round((s.injected_at - start).total_seconds())) for s in report.steps])
        assert report.seed == 11 and report.verdict == "pass", report.reasons
        assert not cluster.down
    assert runs[0] == runs[1] and [offset for *_, offset in runs[0]] == [0, 4, 8]


async def test_a_fault_that_never_took_effect_makes_the_run_inconclusive(client):
    cluster = FakeCluster()
    cluster.no_effect.add("bandwidth")
    report, _ = await run_chaos(client, cluster, fast_input(fault="bandwidth", target="n2"))
    assert report.verdict == "inconclusive", report.reasons
    assert any("never took effect" in r for r in report.reasons)


async def test_a_check_step_that_finds_the_subject_unsteady_fails_the_run_and_undoes_the_fault(client):
    cluster = FakeCluster()
    report, _ = await run_chaos(client, cluster, steps_input(
        {"lanes": [[{"fault": {"target": "n2", "duration_s": 30}}], [{"wait_s": 0.5}, {"check": True}]]}))
    assert report.verdict == "fail"
    assert any("not steady" in r for r in report.reasons), report.reasons
    assert cluster.restores == ["n2"] and not cluster.down


async def test_an_approval_step_holds_the_run_until_advance(client):
    cluster = FakeCluster()

    async def approve(handle):
        await until(lambda: cluster.injects == ["n2"] and not cluster.down)  # the first fault came and went
        await asyncio.sleep(0.5)
        assert len(cluster.injects) == 1  # held: the second fault waits for the approval
        await handle.execute_update(ChaosDemoWorkflow.advance)

    report, _ = await run_chaos(client, cluster, steps_input(
        {"fault": {"target": "n2", "duration_s": 0.5}}, {"approval": "look at the graphs"},
        {"fault": {"target": "n3"}}), during=approve)
    assert report.verdict == "pass", report.reasons and cluster.injects == ["n2", "n3"]


@pytest.mark.parametrize("began_before_restore", [True, False], ids=["began-before-restore", "began-after"])
async def test_a_stop_condition_tripped_by_the_window_the_restore_began_in_fails_the_run(client, began_before_restore):
    """Stop conditions stop counting once the restore begins, but a load window that began while the fault was on
    and ends after that holds the fault's errors: its trip fails the run (it was dropped, and the run passed). A
    window that began after the restore did is not held against the fault."""
    cluster = FakeCluster()

    def trip(start: datetime, end: datetime) -> Trip | None:
        if not cluster.restore_times or end < cluster.restore_times[0]:
            return None
        if (start < cluster.restore_times[0]) != began_before_restore:
            return None
        return Trip(condition="error rate > 0% over 5s", detail="3.0% of 100 operations failed", at=end)

    cluster.window_trip = trip
    inp = fast_input(target="n2")
    inp.load_window_s = 2.0 if began_before_restore else 0.05  # long: one window spans the whole fault
    report, _ = await run_chaos(client, cluster, inp)
    assert cluster.restores == ["n2"]
    if began_before_restore:
        assert report.verdict == "fail" and report.stopped is not None, report.reasons
        assert any("3.0% of 100 operations failed" in r for r in report.failed_because), report.failed_because
    else:
        assert report.verdict == "pass" and report.stopped is None, report.reasons


async def test_a_lost_load_window_is_followed_at_once_and_a_failing_one_a_second_later(client):
    """A window lost with its worker (it ran, then its heartbeats stopped) leaves a gap in the load only as long as
    noticing the dead worker took: the next window starts at once. One that fails at once (a subject that refuses)
    still waits a second, so a broken load never spins. Both used to wait a second."""
    cluster = FakeCluster()
    cluster.window_fails = [1.2, 0, 0]
    inp = fast_input(target="n2")
    inp.countdown_s = 6
    report, _ = await run_chaos(client, cluster, inp)
    assert report.verdict == "pass", report.reasons
    times = cluster.window_times
    gaps = [round((times[i + 1][0] - times[i][1]).total_seconds(), 2) for i in range(3)]
    assert [failed for _, _, failed in times[:4]] == [True, True, True, False], times
    assert gaps[0] < 0.7, gaps  # after the window that ran 1.2 s (it was 1.03 s)
    assert all(0.9 <= g < 2.0 for g in gaps[1:]), gaps  # after the ones that failed at once


async def test_a_load_window_lost_with_its_worker_is_retried_by_the_server_and_one_that_fails_is_not(client):
    """A window lost with its worker gets a second attempt from the server at once: on a real fleet the workflow
    is not needed for it, so the load's gap is the heartbeat timeout and not that plus the dead worker's sticky
    queue (bench: resume at the countdown). A window that fails by itself is not retried: the workflow starts the
    next window, a second after it began. Before the patch, a lost window was never retried."""
    cluster = FakeCluster()
    cluster.window_fails = [0]  # the first window fails by itself
    cluster.windows_lost = [0.3]  # the second is lost with its worker
    inp = fast_input(target="n2")
    inp.countdown_s = 3
    report, _ = await run_chaos(client, cluster, inp)
    assert report.verdict == "pass", report.reasons
    assert cluster.window_attempts[:4] == [1, 1, 2, 1], cluster.window_attempts
    (failed_began, _, _), (lost_began, lost_at, _), (retry_began, _, _) = cluster.window_times[:3]
    assert (lost_began - failed_began).total_seconds() >= 0.9, cluster.window_times[:2]
    assert (retry_began - lost_at).total_seconds() < 0.5, cluster.window_times[1:3]
