"""The steady-state hypothesis judged: each probe's figure read from the availability the safety check measured
(before, during and after the fault, or over the whole run), held against its tolerance; a sampled probe (http,
exec, promql) holds in its phase when every sample the load windows took in that phase satisfies it. Pure: the
workflow's verdict calls it, and `run --dry-run` words the probes with it."""

from __future__ import annotations

import re
from datetime import datetime

from durable_chaos.contracts import Availability, LoadWindow, PhaseLatency, Probe, ProbeResult, ProbeSample, Tolerance

PHASES = {"before": "before the fault", "during": "during the fault", "after": "after the fault",
          "continuously": "over the whole run"}
UNITS = {"error_rate": "", "p50_ms": " ms", "p99_ms": " ms", "longest_gap_s": " s"}


def judge(probes: list[Probe], availability: Availability | None, windows: list[LoadWindow] = (),
          fault_start: datetime | None = None, fault_end: datetime | None = None) -> list[ProbeResult]:
    """Every probe. The load's figures come from `availability`; a sampled probe's samples from the load `windows`,
    cut into phases at `fault_start` (the first fault's injection) and `fault_end` (healthy again after the last
    undo)."""
    return [_judge_samples(p, windows, fault_start, fault_end) if p.sampled else _judge(p, availability)
            for p in probes]


def _judge(probe: Probe, availability: Availability | None) -> ProbeResult:
    name = probe.label
    value = None if availability is None else _measure(probe, availability)
    wanted = describe(probe.tolerance)
    where = f"{probe.figure} {PHASES[probe.mode]}"
    if probe.mode == "continuously" and probe.figure == "p99_ms":
        where += " (the worst phase's: a p99 of the whole lies between the phases')"
    if value is None:
        return ProbeResult(name=name, held=False, detail=f"{where}: not measured (no operation in that phase, or "
                                                         f"no safety check), wanted {wanted}")
    return ProbeResult(name=name, held=holds(probe.tolerance, value), value=value,
                       detail=f"{where} {value:g}{UNITS[probe.figure]}, wanted {wanted}")


def _measure(probe: Probe, a: Availability) -> float | None:
    if probe.mode == "continuously":
        whole = PhaseLatency(ops=a.before.ops + a.during.ops + a.after.ops,
                             errors=a.before.errors + a.during.errors + a.after.errors,
                             longest_gap_ms=a.longest_gap_ms,
                             p99_ms=max((p.p99_ms for p in (a.before, a.during, a.after) if p.p99_ms is not None),
                                        default=None),
                             p50_ms=None)  # refused with `continuously` (contracts/hypothesis.py)
        return _figure(probe.figure, whole)
    return _figure(probe.figure, getattr(a, probe.mode))


def _figure(figure: str, phase: PhaseLatency) -> float | None:
    if phase.ops == 0:
        return None
    if figure == "error_rate":
        return round(phase.errors / phase.ops, 4)
    if figure == "longest_gap_s":
        return None if phase.longest_gap_ms is None else round(phase.longest_gap_ms / 1000, 3)
    return getattr(phase, figure)


def holds(t: Tolerance, value: float) -> bool:
    if t.lt is not None:
        return value < t.lt
    if t.le is not None:
        return value <= t.le
    if t.eq is not None:
        return value == t.eq
    low, high = t.between
    return low <= value <= high


def describe(t: Tolerance) -> str:
    if t.lt is not None:
        return f"< {t.lt:g}"
    if t.le is not None:
        return f"<= {t.le:g}"
    if t.eq is not None:
        return f"== {t.eq:g}"
    if t.matches is not None:
        return f"matches /{t.matches}/"
    return f"between {t.between[0]:g} and {t.between[1]:g}"


# -- sampled probes: http, exec, promql -------------------------------------------------------------------------


def source(probe: Probe) -> str:
    """What a sampled probe asks, in words."""
    if probe.http:
        return f"GET {probe.http.url}" + (f" field {probe.http.json_field}" if probe.http.json_field else "")
    if probe.exec_:
        return f"`{' '.join(probe.exec_.command)}` in {probe.exec_.service}"
    return f"PromQL `{probe.promql.query}` at {probe.promql.url}"


def in_phase(mode: str, at: datetime, fault_start: datetime | None, fault_end: datetime | None) -> bool:
    """Whether a sample taken `at` belongs to the phase: before the first injection; from it until healthy again
    after the last undo (to the end, if never healthy again); after that; or any time."""
    if mode == "continuously":
        return True
    started = fault_start is not None and at >= fault_start
    ended = started and fault_end is not None and at >= fault_end
    return {"before": not started, "during": started and not ended, "after": ended}[mode]


def satisfies(t: Tolerance, sample: ProbeSample) -> bool:
    """One sample against the tolerance: a text must match `matches`; a number must compare (a text that reads as
    a number counts as one). No answer never satisfies."""
    if sample.error is not None:
        return False
    if t.matches is not None:
        text = sample.text if sample.text is not None else (None if sample.value is None else f"{sample.value:g}")
        return text is not None and re.search(t.matches, text) is not None
    value = sample.value
    if value is None and sample.text is not None:
        try:
            value = float(sample.text)
        except ValueError:
            return False
    return value is not None and holds(t, value)


def shown(sample: ProbeSample) -> str:
    if sample.error is not None:
        return f"no answer ({sample.error})"
    if sample.text is not None:
        text = sample.text.strip().replace("\n", " ")
        return repr(text[:80] + ("..." if len(text) > 80 else ""))
    return f"{sample.value:g}"


def _judge_samples(probe: Probe, windows: list[LoadWindow], fault_start: datetime | None,
                   fault_end: datetime | None) -> ProbeResult:
    samples = sorted((s for w in windows for s in w.probes.get(probe.label, [])
                      if in_phase(probe.mode, s.at, fault_start, fault_end)), key=lambda s: s.at)
    wanted = describe(probe.tolerance)
    where = f"{probe.what} of {source(probe)} {PHASES[probe.mode]}"
    if not samples:
        return ProbeResult(name=probe.label, held=False, samples=0,
                           detail=f"{where}: not measured (no sample in that phase), wanted {wanted}")
    failing = [s for s in samples if not satisfies(probe.tolerance, s)]
    if not failing:
        return ProbeResult(name=probe.label, held=True, value=samples[-1].value, samples=len(samples),
                           detail=f"{where}: every one of {len(samples)} samples, last {shown(samples[-1])}, "
                                  f"wanted {wanted}")
    first = failing[0]
    return ProbeResult(name=probe.label, held=False, value=first.value, samples=len(samples), failed_at=first.at,
                       detail=f"{where}: {len(failing)} of {len(samples)} samples failed, the first {shown(first)} "
                              f"at {clock(first.at)}, wanted {wanted}")


def clock(at: datetime) -> str:
    return f"{at:%H:%M:%S.%f}"[:-3] + " UTC"
