"""Stop conditions as each load window and the watch activity judge them: no server, no Docker. The Prometheus is
a local fake the test drives (tests/fake_monitoring.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from temporalio.testing import ActivityEnvironment

from activities.guardrails import load_trip, watch_stop_conditions
from durable_chaos.contracts import LoadWindow, StopConditions, WatchRequest
from tests.fake_monitoring import FakeMonitoring

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def window(start_s: float, ops: int, errors: int, p99_ms: float | None = 5.0, last_ok_s: float | None = None):
    start = T0 + timedelta(seconds=start_s)
    return LoadWindow(start=start, end=start + timedelta(seconds=1), ops=ops, errors=errors, ops_per_s=ops,
                      p99_ms=p99_ms, last_ok_at=T0 + timedelta(seconds=last_ok_s) if last_ok_s is not None else None)


# -- the load's conditions, as each window judges them ------------------------------------------------------------


def test_error_rate_counts_the_sliding_window_and_names_the_figures():
    stop = StopConditions(max_error_rate_pct=10, error_window_s=3)
    old = window(0, ops=0, errors=100)  # long gone from a 3-s window: must not count
    recent = [old, window(7, ops=95, errors=5), window(8, ops=95, errors=5)]
    assert load_trip(stop, recent, window(9, ops=95, errors=5), None, None) is None  # 5% < 10%
    trip = load_trip(stop, recent, window(9, ops=50, errors=50), None, None)
    assert trip.condition == "error rate > 10% over 3s"
    assert trip.detail == "20.0% of 300 operations failed"  # (5+5+50) / (100+100+100)
    assert trip.at == T0 + timedelta(seconds=10)


def test_p99_and_unavailability_trip_past_their_thresholds_only():
    stop = StopConditions(max_p99_ms=200, max_unavailable_s=2)
    assert load_trip(stop, [], window(5, 90, 0, p99_ms=150, last_ok_s=5.9), None, None) is None
    assert load_trip(stop, [], window(5, 90, 0, p99_ms=450, last_ok_s=5.9), None, None).detail.startswith("p99 450")
    # Nothing succeeded in this window, and the last success was 2.5 s before its end.
    trip = load_trip(stop, [], window(5, 0, 100, p99_ms=None), T0 + timedelta(seconds=3.5), None)
    assert trip.condition == "no successful operation for 2s" and trip.detail.startswith("none for 2.5s")
    # Nothing ever succeeded: counted from the start of the run's load.
    assert load_trip(stop, [], window(5, 0, 10, p99_ms=None), None, T0 + timedelta(seconds=5.5)) is None


async def test_abort_query_trips_when_prometheus_returns_non_zero():
    with FakeMonitoring() as fake:
        stop = StopConditions(abort_query='sum(up{job="etcd"} == 0)', prometheus_url=fake.url, interval_s=0.1)
        watching = asyncio.create_task(ActivityEnvironment().run(watch_stop_conditions, WatchRequest(stop=stop)))
        await asyncio.sleep(0.5)
        assert not watching.done()  # zero: all is well, keep watching
        fake.query_value = 2
        trip = await asyncio.wait_for(watching, 5)
    assert trip.condition == """'sum(up{job="etcd"} == 0)' not empty or zero"""
    assert trip.detail == '{job="etcd"} = 2'
