"""Real client traffic against the subject, measured in short windows.

Each window is one activity result, so the throughput timeline of a run lives in its event history. What one
operation is, and where it goes (and fails over to), is the subject's business: its session's `load_op`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timezone

from temporalio import activity

from activities.docker import open_session
from activities.probes import resolve_or_bad_input
from contracts import LoadRequest, LoadWindow


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    if len(sorted_ms) == 1:
        return round(sorted_ms[0], 2)
    return round(statistics.quantiles(sorted_ms, n=100, method="inclusive")[int(q) - 1], 2)


@activity.defn
async def run_load_window(req: LoadRequest) -> LoadWindow:
    instance = resolve_or_bad_input(req.subject)
    latencies: list[float] = []
    errors = 0
    seq = 0
    start = datetime.now(timezone.utc)
    t0 = time.monotonic()
    end_at = t0 + req.window_s

    async def client(slot: int) -> None:
        nonlocal errors, seq
        while time.monotonic() < end_at:
            # Throttled by the SDK; lets a window on a dead worker time out in seconds, not at window + 10 s.
            activity.heartbeat()
            seq += 1
            began = time.monotonic()
            try:
                await session.load_op(slot, seq, req.check_timeout_s)
                latencies.append((time.monotonic() - began) * 1000)
            except Exception:  # any failure of the subject is data, not a crash of the load generator
                errors += 1
                # Do not spin on instant connection refusals.
                await asyncio.sleep(0.01)

    async with open_session(instance) as session:
        await asyncio.gather(*(client(i) for i in range(req.concurrency)))
    elapsed = time.monotonic() - t0
    latencies.sort()
    return LoadWindow(
        start=start,
        end=datetime.now(timezone.utc),
        ops=len(latencies),
        errors=errors,
        ops_per_s=round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=_percentile(latencies, 50),
        p95_ms=_percentile(latencies, 95),
        p99_ms=_percentile(latencies, 99),
    )
