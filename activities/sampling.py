"""The hypothesis's own probes, asked once per load window, at its end: an HTTP GET, a command run in a member
(`docker exec`), a PromQL instant query. Each answer is a sample (`ProbeSample`) in the window's result; the verdict
judges them by phase (durable_chaos/hypothesis.py).

When: at the window's very end, once its last operation is answered, while its part of the history is written.
Not at its start: the load stops with the window that is running when the subject is healthy again after the last
undo, so a window's start is almost never after that, and a probe judged `after` would have no sample. Measured:
even sampled when the window's last operation is due, the check that found the subject healthy again often came
in the window's last answers (in 2 runs of 10 on a 2-core host), after the sample. A probe that answers later than
the part is written holds the window at most its deadline (`probe_timeout`); the next window catches up the
operations due meanwhile (activities/load.py), so the load's rate does not suffer.

A probe that cannot be asked (refused, timed out, no such container) is a sample with an error, not a failed window.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import httpx

from activities.engine import EngineMembers
from activities.guardrails import MonitoringUnreachable, query_samples
from durable_chaos.contracts import Probe, ProbeSample
from durable_chaos.contracts.hypothesis import TEXT_LIMIT
from subjects import SubjectInstance
from subjects.http import describe

# A probe's deadline: this share of the window, at most PROBE_TIMEOUT_S (a `docker exec` takes ~0.1 s, more on a
# busy host: a shorter deadline would fail healthy probes).
PROBE_SHARE = 0.8
PROBE_TIMEOUT_S = 2.0


def probe_timeout(window_s: float) -> float:
    return min(PROBE_TIMEOUT_S, window_s * PROBE_SHARE)


async def sample_all(probes: list[Probe], instance: SubjectInstance, timeout: float) -> dict[str, list[ProbeSample]]:
    """Every probe asked once, at the same time; label -> [its sample]."""
    if not probes:
        return {}
    members = EngineMembers(instance) if any(p.exec_ for p in probes) else None
    try:
        async with httpx.AsyncClient() as http:
            samples = await asyncio.gather(*(sample(p, http, members, timeout) for p in probes))
    finally:
        if members is not None:
            await members.close()
    return {p.label: [s] for p, s in zip(probes, samples)}


async def sample(probe: Probe, http: httpx.AsyncClient, members: EngineMembers | None,
                 timeout: float) -> ProbeSample:
    at = datetime.now(timezone.utc)
    try:
        async with asyncio.timeout(timeout + 0.2):  # each kind keeps to `timeout`; this only backs it up
            if probe.http:
                return await _http(probe, http, at, timeout)
            if probe.exec_:
                return await _exec(probe, members, at, timeout)
            return await _promql(probe, http, at, timeout)
    except TimeoutError:
        return ProbeSample(at=at, error=f"no answer within {timeout:g}s")
    except Exception as exc:  # noqa: BLE001 - a probe that cannot be asked is a sample that failed, never a crash
        return ProbeSample(at=at, error=(str(exc) or type(exc).__name__)[:200])


async def _http(probe: Probe, http: httpx.AsyncClient, at: datetime, timeout: float) -> ProbeSample:
    try:
        r = await http.get(probe.http.url, timeout=timeout)
    except httpx.HTTPError as exc:
        return ProbeSample(at=at, error=describe(exc))
    if probe.what == "status":
        return ProbeSample(at=at, value=float(r.status_code))
    if probe.what == "body":
        return ProbeSample(at=at, text=r.text[:TEXT_LIMIT])
    try:
        return _field(at, r.json(), probe.http.json_field)
    except ValueError:
        return ProbeSample(at=at, error=f"HTTP {r.status_code} with no JSON body")


def _field(at: datetime, body, path: str) -> ProbeSample:
    """A dotted path into JSON (`data.status`, `items.0.name`): a number, or a text (other JSON as JSON text)."""
    for part in path.split("."):
        if isinstance(body, list) and part.lstrip("-").isdigit() and -len(body) <= int(part) < len(body):
            body = body[int(part)]
        elif isinstance(body, dict) and part in body:
            body = body[part]
        else:
            return ProbeSample(at=at, error=f"no field {path} in the answer")
    if isinstance(body, (int, float)) and not isinstance(body, bool):
        return ProbeSample(at=at, value=float(body))
    return ProbeSample(at=at, text=(body if isinstance(body, str) else json.dumps(body))[:TEXT_LIMIT])


async def _exec(probe: Probe, members: EngineMembers, at: datetime, timeout: float) -> ProbeSample:
    result = await members.exec(probe.exec_.service, probe.exec_.command, timeout)
    if result.exit_code == -1:  # no container, not running, or no answer in time: no exit code at all
        return ProbeSample(at=at, error=result.output[:200])
    if probe.what == "output":
        return ProbeSample(at=at, text=result.output[:TEXT_LIMIT])
    return ProbeSample(at=at, value=float(result.exit_code))


async def _promql(probe: Probe, http: httpx.AsyncClient, at: datetime, timeout: float) -> ProbeSample:
    try:
        found = await query_samples(http, probe.promql.url, probe.promql.query, timeout)
    except MonitoringUnreachable as exc:
        return ProbeSample(at=at, error=str(exc)[:200])
    if not found:
        return ProbeSample(at=at, error="the query returned no sample")
    return ProbeSample(at=at, value=found[0][1])
