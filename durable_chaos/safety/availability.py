"""Availability: the longest time without a successful operation, the error rate, latency per fault phase."""

from __future__ import annotations

import statistics
from datetime import datetime, timezone
from itertools import pairwise

from durable_chaos.contracts import Availability, PhaseLatency
from durable_chaos.safety.findings import INFINITY
from durable_chaos.safety.op import Op


def percentile(sorted_values: list[float], q: int) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return round(sorted_values[0], 2)
    return round(statistics.quantiles(sorted_values, n=100, method="inclusive")[q - 1], 2)


def _phase(ops: list[Op]) -> PhaseLatency:
    latencies = sorted(op.latency_ms for op in ops if not op.capped)
    gap = _longest_gap(ops)
    return PhaseLatency(ops=len(ops), errors=sum(1 for op in ops if not op.served),
                        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
                        longest_gap_ms=round(gap[0] / 1e6, 1) if gap else None)


def _longest_gap(ops: list[Op]) -> tuple[int, int] | None:
    """The longest time without a successful answer, from the first operation due to the last answer, and when it
    began (epoch ns); None without operations."""
    if not ops:
        return None
    marks = [min(op.invoke_ns for op in ops)] + sorted(op.complete_ns for op in ops if op.served)
    marks.append(max(marks[-1], max(op.complete_ns for op in ops)))
    return max((b - a, a) for a, b in pairwise(marks))


def moment(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def ns(at: datetime | None) -> int | None:
    """A report's moment on the history's clock (epoch nanoseconds)."""
    return None if at is None else int(at.timestamp() * 1e9)


def availability(ops: list[Op], fault_start_ns: int | None = None, fault_end_ns: int | None = None) -> Availability:
    sent = [op for op in ops if not op.final]
    if not sent:
        return Availability()
    gap, gap_from = _longest_gap(sent)
    start = INFINITY if fault_start_ns is None else fault_start_ns
    end = INFINITY if fault_end_ns is None else fault_end_ns
    return Availability(
        longest_gap_ms=round(gap / 1e6, 1), longest_gap_from=moment(gap_from),
        error_rate=round(sum(1 for op in sent if not op.served) / len(sent), 4),
        capped=sum(1 for op in sent if op.capped),
        # An operation still waiting for its answer as the fault began may have met it (a write in flight when its
        # member was killed fails): it counts during the fault, not as steady state.
        before=_phase([op for op in sent if op.complete_ns < start]),
        during=_phase([op for op in sent if op.complete_ns >= start and op.invoke_ns < end]),
        after=_phase([op for op in sent if op.invoke_ns >= end]),
    )
