"""The steady-state hypothesis judged: each probe's figure read from the availability the safety check measured
(before, during and after the fault, or over the whole run), held against its tolerance. Pure: the workflow's
verdict calls it, and `run --dry-run` words the probes with it."""

from __future__ import annotations

from durable_chaos.contracts import Availability, PhaseLatency, Probe, ProbeResult, Tolerance

PHASES = {"before": "before the fault", "during": "during the fault", "after": "after the fault",
          "continuously": "over the whole run"}
UNITS = {"error_rate": "", "p50_ms": " ms", "p99_ms": " ms", "longest_gap_s": " s"}


def judge(probes: list[Probe], availability: Availability | None) -> list[ProbeResult]:
    return [_judge(p, availability) for p in probes]


def _judge(probe: Probe, availability: Availability | None) -> ProbeResult:
    name = probe.name or f"{probe.figure} {probe.mode}"
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
    return f"between {t.between[0]:g} and {t.between[1]:g}"
