"""Diagnosis: gather the evidence bundle, then explain the fault from it - Claude first, the rules engine after.

The rules engine is a first-class diagnoser: it must name the right member from the evidence alone, because it is
what runs when Claude is unavailable (no key, rate limits, outages, a slow or malformed answer). Falling back is
never an error: the activity always returns a diagnosis, within its deadline, so it can never hold up the restore.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from datetime import datetime, timedelta, timezone

from temporalio import activity

from activities.claude import ClaudeAnswer, ClaudeUnavailable, ask_claude
from activities.docker import off_loop, open_session
from activities.engine import container_states, service_logs
from activities.logs import excerpt
from activities.common import resolve_or_bad_input
from durable_chaos.faults import CATALOG, signatures, signs_in_member
from durable_chaos.quorum import has_quorum
from durable_chaos.contracts import (
    ContainerState,
    DiagnoseRequest,
    Diagnosis,
    Evidence,
    EvidenceRequest,
    LoadImpact,
    LoadWindow,
    split_at,
)

SIGNALS = {137: "SIGKILL", 143: "SIGTERM"}
LOG_LOOKBACK = timedelta(seconds=10)  # logs from shortly before the injection: the steady state, then the fault


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def load_impact(windows: list[LoadWindow], injected_at: datetime | None) -> LoadImpact | None:
    if injected_at is None or not windows:
        return None
    before, since = split_at(windows, injected_at)
    baseline, during = _mean([w.ops_per_s for w in before]), _mean([w.ops_per_s for w in since])
    ops, errors = sum(w.ops for w in since), sum(w.errors for w in since)
    p95s = [w.p95_ms for w in since if w.p95_ms is not None]
    return LoadImpact(
        baseline_ops_s=baseline,
        fault_ops_s=during,
        drop_pct=round(100 * (baseline - during) / baseline, 1) if baseline and during is not None else None,
        fault_ops=ops,
        fault_errors=errors,
        error_rate=round(errors / (ops + errors), 4) if ops + errors else None,
        baseline_p95_ms=_mean([w.p95_ms for w in before if w.p95_ms is not None]),
        fault_p95_ms=max(p95s) if p95s else None,
        windows_since_fault=len(since),
    )


@activity.defn
async def gather_evidence(req: EvidenceRequest) -> Evidence:
    """Container states, the check timeline, health now, redacted member logs and the load impact."""
    instance = resolve_or_bad_input(req.subject)
    since = (req.injected_at or datetime.now(timezone.utc)) - LOG_LOOKBACK

    async def health_now():
        async with open_session(instance) as session:
            return await session.check(1.0)

    containers, raw_logs, health = await asyncio.gather(
        container_states(instance),
        service_logs(instance, since.timestamp()),
        health_now(),
    )
    # Each kind's signs on every running member: a partition, packet loss, a rate cap or a CPU quota leaves the
    # member running and says so nowhere in Docker's state.
    running = [c for c in containers if c.running]
    for c in running:  # started again since the fault began: restarted, which Docker's state alone does not say
        c.restarted_since_fault = bool(req.injected_at and c.started_at and c.started_at > req.injected_at)
    for c, signs in zip(running, await asyncio.gather(*(off_loop(signs_in_member, c.container) for c in running))):
        c.signs = signs
    hints = instance.subject.hints
    return Evidence(
        subject=instance.subject.name,
        quorum=hints.quorum,
        notes=hints.prompt_notes,
        services=list(instance.subject.services),
        containers=containers,
        timeline=req.detect.timeline,
        health_now=health,
        injected_at=req.injected_at,
        logs=[excerpt(service, raw, req.injected_at, markers=hints.log_markers) for service, raw in raw_logs.items()],
        load_impact=load_impact(req.load_windows, req.injected_at),
        slow=req.detect.slow,
    )


def _container_finding(c: ContainerState) -> str:
    how = f"exit code {c.exit_code}"
    if c.exit_code in SIGNALS:
        how += f" = {SIGNALS[c.exit_code]}"
    if c.oom_killed:
        how += ", killed by the OOM killer"
    return f"container {c.container or c.service} of {c.service} is {c.status} ({how})"


def rules_diagnosis(ev: Evidence) -> Diagnosis:
    # A member showing a fault's signature (down, frozen, filtered, shaped) is at fault. Members only unhealthy
    # *now* are blamed when no member shows one: while a cluster re-elects a leader or fails over, every member may
    # look unhealthy for a moment, so the first violating check is not used to blame.
    seen = {c.service: signatures(c) for c in ev.containers}
    marked = {service: found for service, found in seen.items() if found}
    down = [c for c in ev.containers if not c.running and c.service not in marked]
    sick_now = [m for m in ev.health_now.members if not m.healthy]
    findings = [f for found in marked.values() for f in found.values()] + [_container_finding(c) for c in down]
    findings += [f"{m.service} fails its health check now: {m.detail}" for m in sick_now]
    # Slow, not down: it answered every check, only far above its baseline. Blamed when nothing else is.
    slow = [s for s in ev.slow if s not in marked and s not in {c.service for c in down}]
    findings += list(ev.slow.values())
    if ev.timeline:
        first_bad = next((c for c in ev.timeline if not c.ok), None)
        if first_bad:
            findings.append(f"first violation at {first_bad.at.isoformat()}: {'; '.join(first_bad.violations)}")
    if marked or down:
        affected = list(marked) + [c.service for c in down]
        cause = "; ".join([f for found in marked.values() for f in found.values()]
                          + [_container_finding(c) for c in down]
                          + [ev.slow[s] for s in marked if s in ev.slow])  # how slow it made them, measured
        confidence = 0.9 if marked else 0.75
    elif sick_now:
        affected = [m.service for m in sick_now]
        cause = f"{', '.join(affected)} running but failing health checks, with no fault visible in its container"
        confidence = 0.6
    elif slow:
        affected = slow
        cause = "; ".join(ev.slow[s] for s in slow) + ", with no fault visible in its container"
        confidence = 0.6
    else:
        return Diagnosis(
            source="rules",
            affected_nodes=[],
            summary="No member is down or unhealthy now; the violation was transient.",
            root_cause="unknown: the evidence shows no lasting fault",
            evidence=findings,
            suggested_actions=["Inspect the member logs around the first violation."],
            confidence=0.2,
        )
    # Out of service: down, or showing a kind that silences a running member (frozen); or failing its checks now.
    out = {c.service for c in ev.containers if not c.running or any(CATALOG[k].out_of_service for k in seen[c.service])}
    out |= {m.service for m in sick_now}
    survivors = [s for s in ev.services if s not in out]
    impact = ev.load_impact
    if impact and impact.drop_pct is not None:
        findings.append(f"client throughput {impact.baseline_ops_s:g} -> {impact.fault_ops_s:g} ops/s "
                        f"({impact.drop_pct:+g}% drop), error rate {100 * (impact.error_rate or 0):.1f}%")
    quorum_text = (
        f"the cluster keeps quorum with {len(survivors)}/{len(ev.services)} members healthy"
        if has_quorum(ev.quorum, len(survivors), len(ev.services))
        else f"quorum is LOST: only {len(survivors)}/{len(ev.services)} members healthy"
    )
    who = ", ".join(affected)
    # Each kind's own advice, once per kind; a member down with no kind's signature (a crash) is started again.
    kinds = dict.fromkeys(kind for found in marked.values() for kind in found)
    actions = [CATALOG[kind].advice.format(who=who) for kind in kinds] or [
        f"Start {who} again and confirm it rejoins the {ev.subject} cluster."]
    return Diagnosis(
        source="rules",
        affected_nodes=affected,
        summary=f"{cause}; {quorum_text}.",
        root_cause=cause,
        evidence=findings,
        suggested_actions=actions,
        confidence=confidence,
    )


def _known_nodes(names: list[str], ev: Evidence) -> tuple[list[str], list[str]]:
    """Split Claude's names into services of the subject (container names map to theirs) and unknown ones."""
    aliases = {s.lower(): s for s in ev.services} | {c.container.lower(): c.service for c in ev.containers if c.container}
    known: list[str] = []
    unknown: list[str] = []
    for name in names:
        service = aliases.get(name.strip().lower())
        if service is None:
            unknown.append(name)
        elif service not in known:
            known.append(service)
    return known, unknown


def claude_diagnosis(answer: ClaudeAnswer, ev: Evidence) -> Diagnosis:
    known, unknown = _known_nodes(answer.findings.affected_nodes, ev)
    if unknown:
        activity.logger.warning("Claude named unknown nodes %s; dropped", unknown)
    return Diagnosis(**answer.findings.model_dump(exclude={"affected_nodes"}), affected_nodes=known,
                     unknown_nodes=unknown, source="claude", model=answer.model)


@activity.defn
async def diagnose(req: DiagnoseRequest) -> Diagnosis:
    """Claude's diagnosis when it answers well within `deadline_s`, else the rules engine's, saying why."""
    ev = req.evidence
    # The call can legitimately take many seconds: the worker's heartbeats tell a dead worker from a slow Claude.
    try:
        answer = await ask_claude(ev, req.deadline_s)
    except ClaudeUnavailable as why:
        # No key is a setup choice the report and live view already state; only a failing Claude is a warning.
        level = logging.INFO if why.reason == "no_api_key" else logging.WARNING
        activity.logger.log(level, "diagnosing with rules: %s", why)
        return rules_diagnosis(ev).model_copy(update={"fallback_reason": why.reason, "fallback_detail": why.detail})
    except Exception as err:  # an SDK surprise must cost us Claude's opinion, never the diagnosis
        activity.logger.exception("Claude call failed unexpectedly")
        return rules_diagnosis(ev).model_copy(update={"fallback_reason": "claude_error",
                                                       "fallback_detail": type(err).__name__})
    return claude_diagnosis(answer, ev)
