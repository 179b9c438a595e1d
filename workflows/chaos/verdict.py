"""The verdict, the reasons and the report: pure functions of what the run recorded.

No Temporal calls here (unit tests call these with hand-built records, no server); the workflow only passes in
what it recorded and shows the result (view.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio import workflow

from workflows.chaos.state import FaultRecord, Record

with workflow.unsafe.imports_passed_through():
    from durable_chaos import hypothesis
    from durable_chaos.wording import trip_reason
    from durable_chaos.contracts import (
        ChaosInput,
        ChaosReport,
        CheckResult,
        DetectorResult,
        Diagnosis,
        FaultState,
        LoadSummary,
        LoadWindow,
        Progress,
        SafetyReport,
        split_at,
    )


@dataclass
class Ending:
    """How the run ended, beside its record: the ids, the times, the final check, the safety check."""

    workflow_id: str
    run_id: str
    project: str
    started_at: datetime
    finished_at: datetime
    final: CheckResult | None
    safety: SafetyReport | None


def grade(diagnosis: Diagnosis, targets: list[str]) -> bool:
    """Correct = every member hit is named and no healthy member is blamed: the run hit those and nothing else."""
    return set(diagnosis.affected_nodes) == set(targets)


def safety_reason(s: SafetyReport) -> str:
    """The data safety verdict as one of the run's reasons."""
    if s.verdict == "ok":
        # In the model's words: a register's writes, a queue's publishes, a transaction's appends.
        what = {"queue": "publishes", "list-append": "appending transactions"}.get(s.model or "", "writes")
        where = f" to {s.keys} keys" if s.keys else ""
        return (f"data safety ok: {s.ops} operations, {s.acked_writes} acknowledged {what}{where}, none lost; "
                f"{', '.join(c.name for c in s.checks)}: ok")
    return f"data safety {s.verdict}: {'; '.join(s.reasons) or 'no reason given'}"


def report(inp: ChaosInput, p: Progress, rec: Record, end: Ending) -> ChaosReport:
    """The run's report; its verdict is pass only when every part of the hypothesis held."""
    detectors = detector_results(inp, p, rec) if inp.detectors else []
    probes = hypothesis.judge(inp.hypothesis, end.safety.availability if end.safety else None, rec.windows,
                              rec.injected.fault_began if rec.injected else None, end.final.at if end.final else None)
    result, why = verdict_of(rec, end, probes, detectors)
    load = load_summary(inp, rec, end.final)
    first = rec.first
    targets = first.request.members if first else p.targets  # planned, if the run ended before it went in
    return ChaosReport(
        workflow_id=end.workflow_id, run_id=end.run_id, subject=inp.subject.name, project=end.project,
        host=inp.subject.host,
        fault=first.request.fault if first else inp.fault, fault_label=first.label if first else None,
        fault_params=first.request.params if first else inp.fault_params,
        target=targets[0] if targets else None, targets=targets,
        verdict=result, failed_because=why,
        reasons=[*rec.reasons, *reasons(inp, p, rec, end, detectors, load),
                 *(f"hypothesis {'held' if r.held else 'broken'}: {r.name}: {r.detail}" for r in probes)],
        started_at=end.started_at, finished_at=end.finished_at,
        injected_at=rec.injected.injected_at if rec.injected else None,
        detected_at=rec.detection.detected_at if rec.detection else None,
        restored_at=first.final.at if first and first.final else None,
        time_to_detect_s=p.time_to_detect_s, time_to_restore_s=p.time_to_restore_s,
        fault_state=p.fault_state, diagnosis=rec.diagnosis, load=load,
        final_check=end.final, safety=end.safety, stopped=rec.trip, detectors=detectors, hypothesis=probes,
        effect=first.effect if first else None,
        steps=[f.report() for f in rec.faults] if inp.steps else [],  # a run of steps (not `chaos` flags)
        seed=rec.seed, on_at_first_violation=[] if result == "pass" else on_at_first_violation(rec),
    )


def verdict_of(rec: Record, end: Ending, probes: list, detectors: list[DetectorResult]) -> tuple[str, list[str]]:
    """The verdict, and why it is not a pass (one line each, worst first). pass: every fault went in, took
    effect, was detected and undone, the subject is healthy again, no data lost, no stop condition, every probe
    held. inconclusive: a fault never took effect (so the run says nothing about it) and nothing else broke. fail:
    anything else."""
    broken = [
        *(["the fault was never injected"] if not rec.faults or rec.injected is None else []),
        *([safety_reason(end.safety)] if end.safety is not None and end.safety.verdict == "violated" else []),
        *([trip_reason(rec.trip)] if rec.trip is not None else []),
        *([rec.step_failed] if rec.step_failed else []),
        *(f"hypothesis broken: {r.name}: {r.detail}" for r in probes if not r.held),
        *(f"{f.what} was not undone" for f in rec.faults if f.injected is not None and not f.restored),
        *(["the subject did not return to its steady state after restore"]
          if rec.faults and (end.final is None or not end.final.ok) else []),
        *(f"your monitoring did not notice: {d.name}" for d in detectors if not d.ours and not d.fired),
        *(["an internal error stopped part of the run (see the reasons)"] if rec.internal_error else []),
    ]
    no_effect = [f"{f.what} never took effect" for f in rec.faults if f.effect is not None and not f.effect.took_effect]
    if no_effect and not broken:
        return "inconclusive", no_effect
    undetected = [f"{f.what} was not detected" for f in rec.faults
                  if f.injected is not None and not f.random and not (f.detection and f.detection.detected)]
    why = broken + undetected
    return ("fail" if why else "pass"), why


def on_at_first_violation(rec: Record) -> list[str]:
    """The faults on when something first went wrong (an invariant violated, a load error): with several faults,
    which of them to suspect."""
    if len(rec.faults) < 2:
        return []
    seen = [f.detection.detected_at for f in rec.faults if f.detection and f.detection.detected_at]
    seen += [w.end for w in rec.windows if w.errors]
    if not seen:
        return []
    when = min(seen)
    return [f.what for f in rec.faults if f.injected and f.injected.injected_at <= when
            and (f.restore is None or f.restore.started_at >= when)]


def reasons(inp: ChaosInput, p: Progress, rec: Record, end: Ending, detectors: list[DetectorResult],
            load: LoadSummary) -> list[str]:
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
        restore = rec.first.restore
        again = (f" on attempt {restore.attempt}, {(restore.started_at - restore.began_at).total_seconds():.1f}s after "
                 "the first (the others failed)" if restore is not None and restore.attempt > 1 else "")
        out.append(f"{', '.join(rec.first.request.members)} restored{again}")
    # A member its undo had to repair is a finding (it could not start on its own disk): said for every fault.
    out += [f"repaired: {note}" for f in rec.faults if f.restore is not None for note in f.restore.repaired]
    if end.final is None:
        out.append("the subject did not return to its steady state after restore")
    else:
        out.append(f"every invariant holds again after {p.time_to_restore_s:.3f}s")
    if rec.diagnosis is not None:
        d = rec.diagnosis
        source = d.source + (f", fallback: {d.fallback_reason}" if d.fallback_reason else "")
        out.append(f"diagnosis ({source}) named {', '.join(d.affected_nodes) or 'nobody'}: "
                   f"{'correct' if d.correct else 'incorrect'}")
    out += [step_reason(f, inp.detect_timeout_s) for f in rec.faults[1:]]
    out += [f"{f.what} never took effect ({'; '.join(f.effect.evidence) or 'no sign of it'}): the run says nothing "
            f"about it" for f in rec.faults if f.effect is not None and not f.effect.took_effect]
    if load.hardly_ran:
        out.append(f"the load answered {load.baseline_ops_s:.3g} ops/s before the fault, "
                   f"{load.baseline_ops_s / load.asked_ops_s:.0%} of the {load.asked_ops_s:g} asked "
                   f"({sum(w.errors for w in load_phases(rec)[0])} operations failed or not sent): the "
                   f"run's figures are those of a lighter load")
    if end.safety is not None:
        out.append(safety_reason(end.safety))
    for d in detectors[1:]:
        out.append(f"your monitoring: {d.name} fired after {d.time_to_detect_s:.3f}s" if d.fired else
                   f"your monitoring did not notice: {d.name} {d.detail}")
    return out


def step_reason(f: FaultRecord, detect_timeout_s: float) -> str:
    """One line for a fault after the first (the first has the lines above): detected, undone."""
    r = f.report()
    where = f"step {f.step}" + (f" lane {f.lane}" if f.lane else "")
    if f.injected is None:
        return f"{where}: {f.what} was never injected"
    seen = (f"detected after {r.time_to_detect_s:.3f}s" if r.time_to_detect_s is not None else
            "not detected" if f.detection is not None else "detection never concluded")
    undone = (f"healthy again {r.time_to_restore_s:.3f}s after its undo" if r.time_to_restore_s is not None else
              "undone" if f.restored else "still on")
    return f"{where}: {f.what}: {seen}, {undone}"


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


def load_phases(rec: Record) -> tuple[list[LoadWindow], list[LoadWindow]]:
    """The load's windows that ended before the first inject began (its steady state), and those after."""
    return split_at(rec.windows, rec.injected.fault_began) if rec.injected else ([], [])


def load_summary(inp: ChaosInput, rec: Record, final: CheckResult | None) -> LoadSummary:
    """Throughput before the fault (the baseline, and the rate it was asked) and its worst while the fault was
    on."""
    before, since = load_phases(rec)
    baseline = [w.ops_per_s for w in before]
    asked = [w.rate or inp.load_rate for w in before]  # a window of a run from before `rate`: the run's own
    during = [w.ops_per_s for w in since if final is None or w.start < final.at]
    return LoadSummary(
        windows=rec.windows,
        baseline_ops_s=round(sum(baseline) / len(baseline), 1) if baseline else None,
        asked_ops_s=round(sum(asked) / len(asked), 1) if asked else None,
        worst_fault_ops_s=min(during) if during else None,
        errors=sum(w.errors for w in rec.windows),
    )
