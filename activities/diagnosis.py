"""Diagnosis: gather the evidence bundle, then explain the fault from it.

The rules engine is a first-class diagnoser: it must name the right member from the evidence alone, because it is
what runs when Claude is unavailable.
"""

from __future__ import annotations

from temporalio import activity

from activities.docker import compose_client, container_states, off_loop
from activities.probes import http_client, resolve_or_bad_input
from contracts import ContainerState, Diagnosis, Evidence, EvidenceRequest

SIGNALS = {137: "SIGKILL", 143: "SIGTERM"}


@activity.defn
async def gather_evidence(req: EvidenceRequest) -> Evidence:
    instance = resolve_or_bad_input(req.subject)
    containers = await off_loop(container_states, compose_client(instance), instance)
    async with http_client() as http:
        health_now = await instance.subject.check(http, instance.endpoints, 1.0)
    return Evidence(
        subject=instance.subject.name,
        services=list(instance.subject.services),
        containers=containers,
        timeline=req.detect.timeline,
        health_now=health_now,
    )


def _container_finding(c: ContainerState) -> str:
    how = f"exit code {c.exit_code}"
    if c.exit_code in SIGNALS:
        how += f" = {SIGNALS[c.exit_code]}"
    if c.oom_killed:
        how += ", killed by the OOM killer"
    return f"container {c.container or c.service} of {c.service} is {c.status} ({how})"


def rules_diagnosis(ev: Evidence) -> Diagnosis:
    down = [c for c in ev.containers if not c.running]
    # Members that are unhealthy *now*. The first violating check is not used to blame: while the cluster
    # re-elects a leader every member looks unhealthy for about a second.
    sick_now = [m for m in ev.health_now.members if not m.healthy]
    findings = [_container_finding(c) for c in down]
    findings += [f"{m.service} fails its health check now: {m.detail}" for m in sick_now]
    if ev.timeline:
        first_bad = next((c for c in ev.timeline if not c.ok), None)
        if first_bad:
            findings.append(f"first violation at {first_bad.at.isoformat()}: {'; '.join(first_bad.violations)}")
    survivors = [s for s in ev.services if s not in {c.service for c in down} | {m.service for m in sick_now}]
    quorum = len(survivors) > len(ev.services) // 2
    if down:
        affected = [c.service for c in down]
        killed = [c for c in down if c.exit_code == 137]
        cause = (
            f"{', '.join(c.service for c in killed)} was killed with SIGKILL (exit 137)"
            if killed
            else f"{', '.join(affected)} stopped ({'; '.join(_container_finding(c) for c in down)})"
        )
        confidence = 0.9 if killed else 0.75
    elif sick_now:
        affected = [m.service for m in sick_now]
        cause = f"{', '.join(affected)} running but failing health checks"
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
    quorum_text = (
        f"the cluster keeps quorum with {len(survivors)}/{len(ev.services)} members"
        if quorum
        else f"quorum is LOST: only {len(survivors)}/{len(ev.services)} members healthy"
    )
    return Diagnosis(
        source="rules",
        affected_nodes=affected,
        summary=f"{', '.join(affected)} of {ev.subject} is down; {quorum_text}.",
        root_cause=cause,
        evidence=findings,
        suggested_actions=[
            f"Start {', '.join(affected)} again and confirm it rejoins (member list, /health).",
            "Find who or what sent the signal (orchestrator events, OOM killer, operator action).",
        ],
        confidence=confidence,
    )


@activity.defn
async def diagnose(evidence: Evidence) -> Diagnosis:
    return rules_diagnosis(evidence)
