"""The verdict and its reasons, as pure functions of what a run recorded: no server, no Docker.

A run passes only when the fault was detected, undone, every invariant holds again, no acknowledged write was lost,
no stop condition tripped and every monitor the user asked about noticed. Each test breaks one of those.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from durable_chaos.contracts import (
    Availability,
    ChaosInput,
    CheckResult,
    DetectorResult,
    DetectResult,
    Diagnosis,
    ExternalDetector,
    FaultEffect,
    FaultRequest,
    FaultState,
    InjectResult,
    LoadWindow,
    PhaseLatency,
    ProbeSample,
    Progress,
    RestoreResult,
    SafetyCheck,
    SafetyReport,
    SubjectRef,
    Trip,
)
from workflows.chaos.state import FaultRecord, Record
from workflows.chaos.verdict import Ending, grade, report

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def check(s: float, ok: bool, violations: tuple[str, ...] = ()) -> CheckResult:
    return CheckResult(at=at(s), ok=ok, members=[], violations=list(violations))


def window(start: float, ops: int) -> LoadWindow:
    return LoadWindow(start=at(start), end=at(start + 1), ops=ops, errors=0, ops_per_s=ops)


def a_good_run(**inp) -> tuple[ChaosInput, Progress, Record, Ending]:
    """etcd2 killed at 10 s, detected at 10.5 s, restored from 20 s, healthy at 21.2 s, no write lost."""
    record = Record(
        windows=[window(s, 100) for s in range(0, 10)] + [window(s, 40) for s in range(10, 22)],
        faults=[fault_record("etcd2", injected=10, detected=10.5, undone=20, healthy=21.2)],
    )
    record.first.diagnosis = Diagnosis(summary="etcd2 is down", root_cause="killed", affected_nodes=["etcd2"],
                                       evidence=[], suggested_actions=[], confidence=0.9, source="rules",
                                       correct=True)
    progress = Progress(subject="etcd", fault="kill", fault_label="kill", target="etcd2", targets=["etcd2"],
                        fault_state=FaultState.RESTORED, time_to_detect_s=0.5, time_to_restore_s=1.2)
    end = Ending(workflow_id="w", run_id="r", project="chaos-etcd", started_at=at(0), finished_at=at(30),
                 final=check(21.2, True), safety=SafetyReport(
                     verdict="ok", ops=2200, acked_writes=1000, keys=8, model="cas-register",
                     checks=[SafetyCheck(name=n, verdict="ok", detail="") for n in ("lost writes", "linearizability")]))
    return ChaosInput(**inp), progress, record, end


def fault_record(member: str, injected: float, detected: float | None, undone: float | None,
                 healthy: float | None, kind: str = "kill", step: int = 1) -> FaultRecord:
    """A fault as the run records it: injected, detected (or not), undone, healthy again after."""
    f = FaultRecord(step=step, lane=None, name="", label=kind, max_fault_s=120,
                    request=FaultRequest(subject=SubjectRef(), fault=kind, target=member, targets=[member]),
                    state=FaultState.RESTORED if undone is not None else FaultState.INJECTED,
                    injected=InjectResult(target=member, container="c", injected_at=at(injected)),
                    detection=DetectResult(detected=detected is not None,
                                           detected_at=at(detected) if detected is not None else None,
                                           first_violation=check(detected, False, (f"{member}: connection refused",))
                                           if detected is not None else None),
                    effect=FaultEffect(took_effect=True, evidence=[f"{member}: {kind} in effect"]))
    if undone is not None:
        f.restore = RestoreResult(target=member, started_at=at(undone))
    if healthy is not None:
        f.final = check(healthy, True)
    return f


def test_a_detected_restored_healthy_and_safe_run_passes_and_says_each_part():
    r = report(*a_good_run())
    assert r.verdict == "pass"
    assert r.reasons == [
        "detected after 0.500s: etcd2: connection refused",
        "etcd2 restored",
        "every invariant holds again after 1.200s",
        "diagnosis (rules) named etcd2: correct",
        "data safety ok: 2200 operations, 1000 acknowledged writes to 8 keys, none lost; lost writes, "
        "linearizability: ok",
    ]
    assert (r.load.baseline_ops_s, r.load.worst_fault_ops_s) == (100.0, 40)
    assert r.detectors == []  # the user named none
    # What the fault did, as its kind confirmed it while it was on (a power loss: the bytes it dropped).
    assert r.effect == FaultEffect(took_effect=True, evidence=["etcd2: kill in effect"])


def test_a_restore_that_took_several_attempts_says_so_and_counts_from_the_first():
    """The server retried the undo (Docker could not start the member): the report says on which attempt it
    succeeded and how long after the first, and the step's time to restore counts from the first attempt."""
    inp, progress, record, end = a_good_run(steps=[{"fault": {"fault": "kill", "target": "etcd2"}}])
    record.first.restore = RestoreResult(target="etcd2", started_at=at(61), attempt=12, first_attempt_at=at(20))
    end.final = record.first.final = check(62.2, True)
    r = report(inp, progress, record, end)
    assert "etcd2 restored on attempt 12, 41.0s after the first (the others failed)" in r.reasons, r.reasons
    assert r.steps[0].time_to_restore_s == 42.2


def test_a_fault_not_detected_fails_the_run():
    inp, p, rec, end = a_good_run(detect_timeout_s=30)
    rec.first.detection = DetectResult(detected=False)
    r = report(inp, p, rec, end)
    assert r.verdict == "fail" and "the fault was not detected within 30s" in r.reasons


def test_a_subject_that_stays_unhealthy_fails_the_run():
    inp, p, rec, end = a_good_run()
    end.final = None
    r = report(inp, p, rec, end)
    assert r.verdict == "fail" and "the subject did not return to its steady state after restore" in r.reasons


def test_a_lost_acknowledged_write_fails_the_run_and_says_why():
    inp, p, rec, end = a_good_run()
    end.safety = SafetyReport(verdict="violated", reasons=["lost writes: 3 acknowledged writes lost"])
    r = report(inp, p, rec, end)
    assert r.verdict == "fail" and r.reasons[-1] == "data safety violated: lost writes: 3 acknowledged writes lost"


def test_an_unknown_safety_verdict_does_not_fail_an_otherwise_good_run():
    inp, p, rec, end = a_good_run()
    end.safety = SafetyReport(verdict="unknown", reasons=["the safety check failed: timeout"])
    assert report(inp, p, rec, end).verdict == "pass"


def test_a_tripped_stop_condition_fails_the_run_even_when_all_else_held():
    inp, p, rec, end = a_good_run()
    rec.trip = Trip(condition="p99 > 200 ms", detail="p99 450 ms", at=at(12))
    rec.reasons.append("stopped: p99 > 200 ms (p99 450 ms): restoring now")
    r = report(inp, p, rec, end)
    assert r.verdict == "fail" and r.stopped == rec.trip
    assert r.reasons[0] == "stopped: p99 > 200 ms (p99 450 ms): restoring now"  # what happened comes first


def test_monitoring_that_never_noticed_fails_the_run_and_is_named():
    alert = ExternalDetector(kind="alert", alert="EtcdMemberDown", url="http://127.0.0.1:9093")
    inp, p, rec, end = a_good_run(detectors=[alert])
    rec.theirs[alert.name] = DetectorResult(name=alert.name, fired=False, detail="did not fire within 30s")
    r = report(inp, p, rec, end)
    assert r.verdict == "fail"
    assert [d.name for d in r.detectors] == ["our probe", alert.name] and r.detectors[0].time_to_detect_s == 0.5
    assert r.reasons[-1] == f"your monitoring did not notice: {alert.name} did not fire within 30s"


def test_a_fault_never_injected_fails_and_its_detectors_were_never_asked():
    alert = ExternalDetector(kind="alert", alert="EtcdMemberDown", url="http://127.0.0.1:9093")
    inp, p, rec, end = a_good_run(detectors=[alert])
    p.fault_state, rec.faults = FaultState.NONE, []
    end.final = None
    r = report(inp, p, rec, end)
    assert r.verdict == "fail" and r.reasons[0] == "the fault was never injected"
    assert r.detectors[1].detail == "never asked: the fault was never injected"
    assert r.load.baseline_ops_s is None  # no fault, no baseline to compare with


def test_the_diagnosis_is_graded_against_every_member_hit():
    d = Diagnosis(summary="", root_cause="", affected_nodes=["etcd1", "etcd3"], evidence=[], suggested_actions=[],
                  confidence=0.5, source="claude")
    assert grade(d, ["etcd3", "etcd1"]) and not grade(d, ["etcd1"]) and not grade(d, ["etcd1", "etcd2", "etcd3"])


def test_a_broken_hypothesis_fails_an_otherwise_good_run_and_names_the_probe():
    inp, p, rec, end = a_good_run(hypothesis=[
        {"name": "few errors", "figure": "error_rate", "tolerance": {"<": 0.1}},
        {"figure": "p99_ms", "mode": "after", "tolerance": {"<=": 50}}])
    end.safety = end.safety.model_copy(update={"availability": Availability(
        during=PhaseLatency(ops=100, errors=40, p99_ms=900), after=PhaseLatency(ops=50, errors=0, p99_ms=20))})
    r = report(inp, p, rec, end)
    assert r.verdict == "fail"
    assert [(h.name, h.held) for h in r.hypothesis] == [("few errors", False), ("p99_ms after", True)]
    assert "hypothesis broken: few errors: error_rate during the fault 0.4, wanted < 0.1" in r.reasons
    assert "hypothesis held: p99_ms after: p99_ms after the fault 20 ms, wanted <= 50" in r.reasons


def test_a_fault_that_never_took_effect_makes_the_run_inconclusive_never_a_pass():
    inp, p, rec, end = a_good_run()
    rec.first.effect = FaultEffect(took_effect=False, evidence=[])
    r = report(inp, p, rec, end)
    assert r.verdict == "inconclusive"
    assert "kill etcd2 never took effect (no sign of it): the run says nothing about it" in r.reasons


def test_a_fault_without_effect_does_not_hide_a_real_failure():
    inp, p, rec, end = a_good_run()
    rec.first.effect = FaultEffect(took_effect=False)
    end.safety = SafetyReport(verdict="violated", reasons=["lost writes: 1 acknowledged write lost"])
    assert report(inp, p, rec, end).verdict == "fail"


def test_every_step_of_a_multi_step_run_has_its_times_and_a_later_undetected_fault_fails_it():
    inp, p, rec, end = a_good_run(steps=[{"fault": {"target": "etcd2"}}, {"wait_s": 5},
                                         {"fault": {"target": "etcd3"}}])
    rec.faults.append(fault_record("etcd3", injected=25, detected=None, undone=40, healthy=41, step=3))
    r = report(inp, p, rec, end)
    assert [(s.step, s.targets, s.time_to_detect_s, s.time_to_restore_s) for s in r.steps] == [
        (1, ["etcd2"], 0.5, 1.2), (3, ["etcd3"], None, 1.0)]
    assert r.verdict == "fail"
    assert "step 3: kill etcd3: not detected, healthy again 1.000s after its undo" in r.reasons
    assert r.on_at_first_violation == ["kill etcd2"]  # the first violation (10.5 s) was etcd2's


def test_a_fault_left_on_fails_the_run():
    inp, p, rec, end = a_good_run(steps=[{"fault": {}}, {"fault": {}}])
    rec.faults.append(fault_record("etcd3", injected=25, detected=26, undone=None, healthy=None, step=2))
    assert report(inp, p, rec, end).verdict == "fail"


def test_the_load_baseline_ends_when_the_inject_began_not_when_it_returned():
    """A partition's rules take effect inside the inject: a window that ended while the inject ran met the fault,
    and counting it as the steady state dragged the baseline down (the safety check splits at the same instant)."""
    inp, progress, record, end = a_good_run()
    record.windows = [window(s, 100) for s in range(0, 9)] + [window(8.5, 3)] + [window(s, 40) for s in range(10, 22)]
    record.first.injected.began_at = at(9.2)  # the window 8.5–9.5 s ended 0.3 s into the inject, which took 0.8 s
    load = report(inp, progress, record, end).load
    assert (load.baseline_ops_s, load.worst_fault_ops_s) == (100.0, 3)


def test_a_load_that_ran_far_below_its_rate_before_the_fault_is_said_and_a_full_one_is_not():
    """At 20 runs on one worker the load could answer 0 of its 100 ops/s and the run still read as a plain pass:
    its safety and availability figures were those of a load that hardly ran (bench sweep, sessions 24-26)."""
    inp, progress, record, end = a_good_run()
    for w in record.windows:
        w.rate = 100.0
    assert not [r for r in report(inp, progress, record, end).reasons if "the load" in r]
    starved = [w.model_copy(update={"ops": 4, "errors": 96, "ops_per_s": 4.0}) if w.end <= at(10) else w
               for w in record.windows]
    record.windows = starved
    r = report(inp, progress, record, end)
    assert r.verdict == "pass"  # said, not failed: nothing the hypothesis asked broke
    [line] = [line for line in r.reasons if "the load" in line]
    assert line == ("the load answered 4 ops/s before the fault, 4% of the 100 asked (960 operations failed or "
                    "not sent): the run's figures are those of a lighter load"), line


def test_a_probe_sample_taken_while_the_inject_ran_is_not_part_of_the_steady_state():
    """A health endpoint asked 0.3 s into a partition's inject already met the fault: a `before` probe judged on
    it failed a run whose steady state held (the load's phases split at the inject's start since session 25)."""
    inp, progress, record, end = a_good_run(hypothesis=[
        {"name": "healthy before", "http": {"url": "http://127.0.0.1:2379/health"}, "mode": "before",
         "tolerance": {"==": 200}}])
    record.first.injected.began_at = at(9.2)
    record.windows[8].probes = {"healthy before": [ProbeSample(at=at(8.9), value=200)]}
    record.windows[9].probes = {"healthy before": [ProbeSample(at=at(9.5), value=503)]}
    r = report(inp, progress, record, end)
    assert [(h.name, h.held, h.samples) for h in r.hypothesis] == [("healthy before", True, 1)], r.hypothesis
