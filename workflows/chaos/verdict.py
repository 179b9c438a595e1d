"""The verdict, the reasons and the report: pure functions of what the run recorded.

No Temporal calls here (unit tests call these with hand-built records, no server); the workflow only passes in
what it recorded and shows the result (view.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio import workflow

from workflows.chaos.state import Record

with workflow.unsafe.imports_passed_through():
    from durable_chaos import hypothesis
    from durable_chaos.contracts import (
        ChaosInput,
        ChaosReport,
        CheckResult,
        DetectorResult,
        Diagnosis,
        FaultState,
        LoadSummary,
        Progress,
        RestoreResult,
        SafetyReport,
    )


@dataclass
class Ending:
    """How the run ended, beside its record: the ids, the times, the restore, the final check, the safety check."""

    workflow_id: str
    run_id: str
    project: str
    targets: list[str]
    started_at: datetime
    finished_at: datetime
    restore: RestoreResult | None
    final: CheckResult | None
    safety: SafetyReport | None


def grade(diagnosis: Diagnosis, targets: list[str]) -> bool:
    """Correct = every member hit is named and no healthy member is blamed: the run hit those and nothing else."""
    return set(diagnosis.affected_nodes) == set(targets)


def safety_reason(s: SafetyReport) -> str:
    """The data safety verdict as one of the run's reasons."""
    if s.verdict == "ok":
        return (f"data safety ok: {s.ops} operations, {s.acked_writes} acknowledged writes to {s.keys} keys, none "
                f"lost, every read linearizable")
    return f"data safety {s.verdict}: {'; '.join(s.reasons) or 'no reason given'}"


def report(inp: ChaosInput, p: Progress, rec: Record, end: Ending) -> ChaosReport:
    """The run's report; its verdict is pass only when every part of the hypothesis held."""
    detectors = detector_results(inp, p, rec) if inp.detectors else []
    probes = hypothesis.judge(inp.hypothesis, end.safety.availability if end.safety else None)
    detected = bool(rec.detection and rec.detection.detected)
    missed = [d for d in detectors if not d.ours and not d.fired]
    passed = (detected and p.fault_state == FaultState.RESTORED and end.final is not None and end.final.ok
              and (end.safety is None or end.safety.verdict != "violated") and rec.trip is None and not missed
              and all(r.held for r in probes))
    return ChaosReport(
        workflow_id=end.workflow_id, run_id=end.run_id, subject=inp.subject.name, project=end.project,
        fault=inp.fault, fault_label=p.fault_label, fault_params=inp.fault_params,
        target=end.targets[0], targets=end.targets,
        verdict="pass" if passed else "fail",
        reasons=[*rec.reasons, *reasons(inp, p, rec, end, detectors),
                 *(f"hypothesis {'held' if r.held else 'broken'}: {r.name}: {r.detail}" for r in probes)],
        started_at=end.started_at, finished_at=end.finished_at,
        injected_at=rec.injected.injected_at if rec.injected else None,
        detected_at=rec.detection.detected_at if rec.detection else None,
        restored_at=end.final.at if end.final else None,
        time_to_detect_s=p.time_to_detect_s, time_to_restore_s=p.time_to_restore_s,
        fault_state=p.fault_state, diagnosis=rec.diagnosis, load=load_summary(rec, end.final),
        final_check=end.final, safety=end.safety, stopped=rec.trip, detectors=detectors, hypothesis=probes,
    )


def reasons(inp: ChaosInput, p: Progress, rec: Record, end: Ending, detectors: list[DetectorResult]) -> list[str]:
    """The reasons the verdict adds to what happened on the way: injected, detected, restored, diagnosed, safe,
    and what the user's monitoring saw."""
    out = []
    detection = rec.detection
    if p.fault_state == FaultState.NONE:
        out.append("the fault was never injected")
    elif detection is not None and detection.detected:
        out.append(f"detected after {p.time_to_detect_s:.3f}s: {'; '.join(detection.first_violation.violations)}")
    elif detection is not None:
        out.append(f"the fault was not detected within {inp.detect_timeout_s:g}s")
    # Otherwise detection never concluded: the cut (abort, deadline) or the failed stage is already a reason.
    if p.fault_state == FaultState.RESTORED:
        out.append(f"{', '.join(end.targets)} restored")
    if end.final is None:
        out.append("the subject did not return to its steady state after restore")
    else:
        out.append(f"every invariant holds again after {p.time_to_restore_s:.3f}s")
    if rec.diagnosis is not None:
        d = rec.diagnosis
        source = d.source + (f", fallback: {d.fallback_reason}" if d.fallback_reason else "")
        out.append(f"diagnosis ({source}) named {', '.join(d.affected_nodes) or 'nobody'}: "
                   f"{'correct' if d.correct else 'incorrect'}")
    if end.safety is not None:
        out.append(safety_reason(end.safety))
    for d in detectors[1:]:
        out.append(f"your monitoring: {d.name} fired after {d.time_to_detect_s:.3f}s" if d.fired else
                   f"your monitoring did not notice: {d.name} {d.detail}")
    return out


def detector_results(inp: ChaosInput, p: Progress, rec: Record) -> list[DetectorResult]:
    """Every detector's time to detect, ours first, then the user's in the order they were given."""
    detection = rec.detection
    ours = DetectorResult(name="our probe", ours=True, fired=bool(detection and detection.detected),
                          fired_at=detection.detected_at if detection else None,
                          time_to_detect_s=p.time_to_detect_s,
                          detail="" if detection else "detection never concluded")
    theirs = [rec.theirs.get(d.name) or DetectorResult(
        name=d.name, fired=False, detail="never asked: the fault was never injected" if rec.injected is None
        else "did not conclude: the run was cut short") for d in inp.detectors]
    return [ours, *theirs]


def load_summary(rec: Record, final: CheckResult | None) -> LoadSummary:
    """Throughput before the fault (the baseline) and its worst while the fault was on."""
    injected, windows = rec.injected, rec.windows
    baseline = [w.ops_per_s for w in windows if injected and w.end <= injected.injected_at]
    during = [w.ops_per_s for w in windows
              if injected and w.end > injected.injected_at and (final is None or w.start < final.at)]
    return LoadSummary(
        windows=windows,
        baseline_ops_s=round(sum(baseline) / len(baseline), 1) if baseline else None,
        worst_fault_ops_s=min(during) if during else None,
        errors=sum(w.errors for w in windows),
    )
