"""Real client traffic against the subject, measured in short windows.

Each window is one activity result, so the throughput timeline of a run lives in its event history. Each client
sticks to one endpoint and fails over to the next one after an error, as a real etcd client with several
endpoints would: a killed member shows up as errors and a throughput dip, not as a total outage.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timezone

from temporalio import activity

from activities.probes import http_client, resolve_or_bad_input
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
    endpoints = list(instance.endpoints.values())
    latencies: list[float] = []
    errors = 0
    seq = 0
    start = datetime.now(timezone.utc)
    t0 = time.monotonic()
    end_at = t0 + req.window_s

    async def client(slot: int) -> None:
        nonlocal errors, seq
        endpoint = slot % len(endpoints)
        while time.monotonic() < end_at:
            # Throttled by the SDK; lets a window on a dead worker time out in seconds, not at window + 10 s.
            activity.heartbeat()
            seq += 1
            began = time.monotonic()
            try:
                await instance.subject.load_op(http, endpoints[endpoint], seq, req.check_timeout_s)
                latencies.append((time.monotonic() - began) * 1000)
            except Exception:  # any failure of the subject is data, not a crash of the load generator
                errors += 1
                endpoint = (endpoint + 1) % len(endpoints)
                # Do not spin on instant connection refusals.
                await asyncio.sleep(0.01)

    async with http_client() as http:
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
