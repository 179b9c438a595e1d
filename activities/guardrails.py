"""Guardrails: stop conditions, and the user's own monitoring as a detector.

Every condition is evaluated here, in activities, never by polling from workflow code:
- the load's figures (error rate, p99, unavailability) by each load window as it ends (`load_trip`), from its own
  operations and the figures of the windows before it, which the workflow hands over;
- an abort probe and a PromQL abort query by `watch_stop_conditions`, which returns the moment one trips.
A trip is an activity result, so each one is in the run's history with the figures that tripped it.

The user's monitoring is asked over its own HTTP APIs: Alertmanager's `/api/v2/alerts`, Prometheus's
`/api/v1/alerts` and `/api/v1/query`, or any endpoint that answers 2xx while all is well.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import httpx
from temporalio import activity

from durable_chaos.contracts import (
    DetectorResult,
    ExternalDetector,
    ExternalDetectRequest,
    LoadWindow,
    StopConditions,
    Trip,
    WatchRequest,
    bad_input,
)
from durable_chaos.wording import condition_label
from subjects.http import describe

# A Prometheus that does not answer is tolerated this many times in a row before the query counts as tripped:
# one slow scrape must not stop a run, a monitoring outage during a fault must (nobody is watching the blast).
QUERY_FAILURES_TO_TRIP = 3


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- the load's own figures --------------------------------------------------------------------------------------


def load_trip(stop: StopConditions, recent: list[LoadWindow], window: LoadWindow,
              last_ok_before: datetime | None, load_since: datetime | None) -> Trip | None:
    """Whether the window that just ended trips a load condition. `recent` are the windows before it (the sliding
    error window is cut from them), `last_ok_before` the last success before this window, `load_since` the start of
    the run's load (unavailability counts from there while nothing has succeeded yet)."""
    if stop.max_error_rate_pct is not None:
        cut = window.end - timedelta(seconds=stop.error_window_s)
        inside = [w for w in recent if w.end > cut] + [window]
        failed, total = sum(w.errors for w in inside), sum(w.ops + w.errors for w in inside)
        if total and failed * 100 / total > stop.max_error_rate_pct:
            return Trip(condition=condition_label(stop, "max_error_rate_pct"),
                        detail=f"{failed * 100 / total:.1f}% of {total} operations failed", at=window.end)
    if stop.max_p99_ms is not None and window.p99_ms is not None and window.p99_ms > stop.max_p99_ms:
        return Trip(condition=condition_label(stop, "max_p99_ms"),
                    detail=f"p99 {window.p99_ms:.0f} ms over {window.ops} answered operations", at=window.end)
    if stop.max_unavailable_s is not None:
        last_ok = window.last_ok_at or last_ok_before
        since = last_ok or load_since or window.start
        gap = (window.end - since).total_seconds()
        if gap >= stop.max_unavailable_s:
            what = f"since {last_ok:%H:%M:%S.%f}"[:-3] + " UTC" if last_ok else "since the load started"
            return Trip(condition=condition_label(stop, "max_unavailable_s"),
                        detail=f"none for {gap:.1f}s ({what})", at=window.end)
    return None


# -- what the user's monitoring says ------------------------------------------------------------------------------


class MonitoringUnreachable(RuntimeError):
    """An address that did not answer as the API it should be: one line."""


async def _get(http: httpx.AsyncClient, url: str, timeout: float, **params) -> httpx.Response:
    try:
        return await http.get(url, params=params or None, timeout=timeout)
    except httpx.HTTPError as exc:
        raise MonitoringUnreachable(f"{url}: {describe(exc)}") from exc


async def firing_alerts(http: httpx.AsyncClient, base: str, timeout: float) -> set[str]:
    """Names of the alerts firing now: Alertmanager's v2 API when the address is an Alertmanager, else Prometheus's
    own alerts API (a Prometheus answers 404 under /api/v2)."""
    base = base.rstrip("/")
    r = await _get(http, f"{base}/api/v2/alerts", timeout)
    if r.status_code == 200:
        return {a.get("labels", {}).get("alertname", "") for a in _json(r, list)
                if a.get("status", {}).get("state", "active") == "active"}
    r = await _get(http, f"{base}/api/v1/alerts", timeout)
    if r.status_code != 200:
        raise MonitoringUnreachable(f"{base} answers neither Alertmanager's /api/v2/alerts nor Prometheus's "
                                    f"/api/v1/alerts (HTTP {r.status_code})")
    alerts = _json(r, dict).get("data", {}).get("alerts", [])
    return {a.get("labels", {}).get("alertname", "") for a in alerts if a.get("state") == "firing"}


async def query_samples(http: httpx.AsyncClient, prometheus: str, query: str,
                        timeout: float) -> list[tuple[str, float]]:
    """An instant query's samples as (labels, value); raises with Prometheus's own error for a query it rejects."""
    r = await _get(http, f"{prometheus.rstrip('/')}/api/v1/query", timeout, query=query)
    body = _json(r, dict)
    if body.get("status") != "success":
        raise MonitoringUnreachable(f"Prometheus refused {query!r}: {body.get('error') or f'HTTP {r.status_code}'}")
    data = body.get("data", {})
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return [("", float(result[1]))] if data.get("resultType") == "scalar" else []
    return [(_labels(s.get("metric", {})), float(s.get("value", [0, "0"])[1])) for s in result or []]


def _labels(metric: dict) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _json(r: httpx.Response, kind: type):
    try:
        body = r.json()
    except ValueError:
        raise MonitoringUnreachable(f"{r.request.url} answered HTTP {r.status_code} with no JSON") from None
    if not isinstance(body, kind):
        raise MonitoringUnreachable(f"{r.request.url} answered JSON of another shape")
    return body


async def endpoint_status(http: httpx.AsyncClient, url: str, timeout: float) -> str | None:
    """None while the endpoint answers 2xx, else what it did instead (one phrase)."""
    try:
        r = await http.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return describe(exc)
    return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"


async def check_monitoring(stop: StopConditions, detectors: list[ExternalDetector], timeout: float = 3.0) -> None:
    """Preflight: every address the guardrails will ask answers now, as the API it should be. Raises bad input
    (one line, nothing injected) otherwise: a guardrail that cannot see is no guardrail."""
    async with httpx.AsyncClient() as http:
        try:
            if stop.abort_query:
                await query_samples(http, stop.prometheus_url, stop.abort_query, timeout)
            elif stop.prometheus_url:
                await query_samples(http, stop.prometheus_url, "vector(0)", timeout)
            for d in detectors:
                if d.kind == "alert":
                    await firing_alerts(http, d.url, timeout)
        except MonitoringUnreachable as exc:
            raise bad_input(f"monitoring does not answer before the run: {exc}") from exc
        if stop.abort_probe_url:
            problem = await endpoint_status(http, stop.abort_probe_url, timeout)
            if problem:
                raise bad_input(f"--abort-probe {stop.abort_probe_url} is failing before the run ({problem}): "
                                "nothing injected")


# -- activities ---------------------------------------------------------------------------------------------------


@activity.defn
async def watch_stop_conditions(req: WatchRequest) -> Trip:
    """Ask the abort probe and the abort query every `interval_s` until one trips; returns that trip. Runs from the
    first load window until the workflow cancels it at restore."""
    stop = req.stop
    failures = 0
    async with httpx.AsyncClient() as http:
        while True:
            if stop.abort_probe_url:
                problem = await endpoint_status(http, stop.abort_probe_url, req.check_timeout_s)
                if problem:
                    return Trip(condition=condition_label(stop, "abort_probe_url"), detail=problem, at=_now())
            if stop.abort_query:
                try:
                    samples = await query_samples(http, stop.prometheus_url, stop.abort_query, req.check_timeout_s)
                    failures = 0
                except MonitoringUnreachable as exc:
                    failures += 1
                    if failures >= QUERY_FAILURES_TO_TRIP:
                        return Trip(condition=condition_label(stop, "abort_query"),
                                    detail=f"Prometheus unanswered {failures} times in a row: {exc}", at=_now())
                    samples = []
                hot = [(labels, value) for labels, value in samples if value != 0]
                if hot:
                    shown = ", ".join(f"{labels} = {value:g}" for labels, value in hot[:3])
                    return Trip(condition=condition_label(stop, "abort_query"),
                                detail=shown + (f" and {len(hot) - 3} more" if len(hot) > 3 else ""), at=_now())
            await asyncio.sleep(stop.interval_s)


async def _fired(http: httpx.AsyncClient, d: ExternalDetector, timeout: float) -> str | None:
    if d.kind == "http":
        return await endpoint_status(http, d.url, timeout)
    try:
        return "firing" if d.alert in await firing_alerts(http, d.url, timeout) else None
    except MonitoringUnreachable as exc:
        activity.logger.warning("asking for alert %s: %s", d.alert, exc)
        return None  # their monitoring being down is not their alert firing


@activity.defn
async def wait_external_detection(req: ExternalDetectRequest) -> DetectorResult:
    """Poll the user's detector until it fires or `timeout_s` passes; its time to detect counts from the fault."""
    d = req.detector
    deadline = time.monotonic() + req.timeout_s
    async with httpx.AsyncClient() as http:
        while True:
            detail = await _fired(http, d, req.check_timeout_s)
            at = _now()
            if detail:
                return DetectorResult(name=d.name, fired=True, fired_at=at, detail=detail,
                                      time_to_detect_s=round(max(0.0, (at - req.since).total_seconds()), 3))
            if time.monotonic() >= deadline:
                return DetectorResult(name=d.name, fired=False, detail=f"never fired within {req.timeout_s:g}s")
            await asyncio.sleep(req.interval_s)
