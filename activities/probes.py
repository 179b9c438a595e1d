"""The steady-state hypothesis: evaluating a subject's invariants, once or in a loop.

Checks run inside one long activity per stage (not one activity per check) so the polling interval can be short
without flooding the event history; the worker heartbeats while it runs, so a dead worker is noticed fast.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.docker import (
    bring_up,
    compose_client,
    ensure_docker,
    ensure_image,
    ensure_images_or_fail,
    off_loop,
    open_session,
    storage_for,
    validate_compose,
)
from activities.common import fault_or_bad_input, resolve_or_bad_input
from activities.engine import all_running
from activities.faults import member_targets
from activities.guardrails import check_monitoring
from durable_chaos.contracts import (
    CheckResult,
    ChooseRequest,
    DetectRequest,
    DetectResult,
    ErrorType,
    FaultPlan,
    PreflightRequest,
    PreflightResult,
    SlowRule,
    SlowWatch,
    StopConditions,
    TargetChoice,
    WaitHealthyRequest,
    bad_input,
)
from activities.notify import worker_notify_url
from durable_chaos.faults import BadFault, Fault, target_choice
from durable_chaos.faults.steps import BadStep, check_steps, spare
from durable_chaos.slow import SlowTracker, as_violation, baseline, finding, slow_now
from subjects import Session, SubjectInstance

TIMELINE_CAP = 40  # checks kept for the evidence bundle; older ones are dropped


async def wait_until_healthy(
    instance: SubjectInstance, timeout_s: float, check_timeout_s: float, interval_s: float = 0.25,
    slow: SlowWatch | None = None,
) -> CheckResult | None:
    """Poll until every invariant holds, and with `slow` no member answers slowly; None on timeout. Heartbeats
    each check."""
    async with open_session(instance) as session:
        return await poll_until_healthy(session, timeout_s, check_timeout_s, interval_s, slow)


async def poll_until_healthy(session: Session, timeout_s: float, check_timeout_s: float, interval_s: float = 0.25,
                             slow: SlowWatch | None = None) -> CheckResult | None:
    """`wait_until_healthy` on a session the caller holds open."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = await session.check(check_timeout_s, fail_fast=True)
        if slow is not None and last.ok:
            # One fast answer is enough to call a member recovered; only calling it slow takes several.
            last = as_violation(last, {s: finding(slow, s, ms, 1) for s, ms in slow_now(slow, last).items()})
        if last.ok:
            return last
        if time.monotonic() >= deadline:
            activity.logger.warning("subject still unhealthy: %s", "; ".join(last.violations))
            return None
        await asyncio.sleep(interval_s)


def _build_progress(line: str) -> None:
    # Runs in the build's thread: the worker log shows where a long image build is.
    activity.logger.info("image build: %s", line)


@activity.defn
async def preflight(req: PreflightRequest) -> PreflightResult:
    """Validate the input, bring the subject up if needed, wait for its steady state and resolve who may be hit.
    Kills nothing: every refusal (bad input, a fault this kernel cannot do) happens before the fault exists."""
    instance = resolve_or_bad_input(req.subject)
    subject = instance.subject
    fault = fault_or_bad_input(req.fault, req.fault_params)
    _choice_or_bad_input(subject, fault, req, roles=None)  # what is wrong without asking the system: say it now
    try:
        every = [fault, *check_steps(subject, req.steps)]
    except BadStep as err:
        raise bad_input(f"step {err.at[0] + 1}: {err}") from None
    if req.stop is not None or req.detectors:
        await check_monitoring(req.stop or StopConditions(), req.detectors)
    try:
        notify_worker = worker_notify_url() is not None
    except ValueError as err:
        raise bad_input(f"this worker's {err}") from None
    client = compose_client(instance)
    await off_loop(ensure_docker)
    await off_loop(validate_compose, client, instance)
    for kind in {f.kind: f for f in every}.values():
        if images := kind.images():
            await off_loop(ensure_images_or_fail, images, f"fault {kind.kind}", _build_progress)
        reason = await off_loop(kind.unsupported)
        if reason:
            raise bad_input(reason)
    # A storage fault needs every member's data on a power-loss layer, any other run has it off (a copy switched
    # either way comes up fresh, with its data).
    layered = any(kind.needs_storage_layer for kind in every)
    if layered and not subject.data_paths:
        raise bad_input(f"{', '.join(sorted({k.kind for k in every if k.needs_storage_layer}))}: subject "
                        f"{subject.name!r} declares no data volume (where its members keep their data): nothing was "
                        "touched")
    started = await off_loop(storage_for, instance, layered)
    if started:
        client = compose_client(instance)
    if not await all_running(instance):
        await off_loop(ensure_image, instance, _build_progress)
        await off_loop(bring_up, client)
        started = True
    # One session (one set of connections) for the steady state and the baseline measured right after it.
    async with open_session(instance) as session:
        baseline = await poll_until_healthy(session, req.timeout_s, req.check_timeout_s)
        slow = None if baseline is None else await measure_baseline(session, req.slow or subject.defaults.slow,
                                                                    baseline, req.check_timeout_s)
    if baseline is None:
        raise ApplicationError(
            f"subject {subject.name!r} (project {instance.project}) did not become healthy within {req.timeout_s:g}s",
            type=ErrorType.SUBJECT_UNHEALTHY,
            non_retryable=True,
        )
    # Roles as the steady state reads them, the moment before the countdown: `leader` means this member.
    choice = _choice_or_bad_input(subject, fault, req, roles=baseline.roles)
    # What only the members themselves can tell (a process they run, a data volume): asked of every member each
    # fault may hit (a later step's members are drawn later, so its kind is asked of every target).
    # One lookup of the members serves every kind, and none at all when no kind can refuse (kill, partition...).
    asked = [(kind, members) for kind, members in [(fault, [*choice.must, *choice.pool]),
                                                   *((f, list(subject.targets)) for f in every[1:])]
             if type(kind).refuse is not Fault.refuse]
    if asked:
        targets = {t.service: t for t in await off_loop(member_targets, instance, list(subject.targets), "preflight")}
        for kind, members in asked:  # in the choice's order: the member the run names first is the one refused
            reason = await off_loop(kind.refuse, [targets[m] for m in members if m in targets])
            if reason:
                raise bad_input(reason)
    return PreflightResult(
        subject=subject.name,
        project=instance.project,
        services=list(subject.services),
        targets=list(subject.targets),
        started_subject=started,
        baseline=baseline,
        defaults=subject.defaults,
        choice=choice,
        fault_label=fault.label(),
        spare=spare(subject),
        notify_worker=notify_worker,
        slow=slow,
    )


BASELINE_CHECKS = 5  # the first healthy check and four more: a median that one slow answer does not move


async def measure_baseline(session: Session, rule: SlowRule, first: CheckResult,
                           check_timeout_s: float) -> SlowWatch:
    """Every member's probe latency before the fault: the median of a few healthy checks."""
    checks = [first]
    while len(checks) < BASELINE_CHECKS:
        await asyncio.sleep(0.1)
        checks.append(await session.check(check_timeout_s))
    return baseline(rule, [c for c in checks if c.ok] or [first])


@activity.defn
async def choose_targets(req: ChooseRequest) -> FaultPlan:
    """Who a later step's fault may hit, with the roles as the system reports them now; never a busy member."""
    instance = resolve_or_bad_input(req.subject)
    fault = fault_or_bad_input(req.step.fault, req.step.params)
    async with open_session(instance) as session:
        roles = (await session.check(req.check_timeout_s)).roles
    step = req.step
    try:
        choice = target_choice(instance.subject, fault, step.target, step.count, step.allow_quorum_loss, roles)
    except BadFault as err:
        raise bad_input(str(err)) from None
    free = [m for m in choice.pool if m not in req.busy]
    if any(m in req.busy for m in choice.must) or len(choice.must) + len(free) < choice.count:
        raise bad_input(f"{step.target or 'random'} for {fault.label()}: every member it may hit already has a "
                        f"fault on ({', '.join(req.busy)})")
    return FaultPlan(choice=choice.model_copy(update={"pool": free}), fault_label=fault.label())


def _choice_or_bad_input(subject, fault: Fault, req: PreflightRequest, roles: dict[str, str] | None) -> TargetChoice:
    try:
        return target_choice(subject, fault, req.target, req.count, req.allow_quorum_loss, roles)
    except BadFault as exc:
        raise bad_input(str(exc)) from exc


@activity.defn
async def detect_violation(req: DetectRequest) -> DetectResult:
    """Check every `interval_s` until an invariant is violated or `timeout_s` passes."""
    instance = resolve_or_bad_input(req.subject)
    deadline = time.monotonic() + req.timeout_s
    timeline: list[CheckResult] = []
    checks = 0
    tracker = SlowTracker(req.slow) if req.slow is not None else None
    async with open_session(instance) as session:
        while True:
            tick = time.monotonic()
            result = await session.check(req.check_timeout_s, fail_fast=True)
            checks += 1
            slow = tracker.see(result) if tracker is not None else {}
            result = as_violation(result, slow)
            timeline = (timeline + [result])[-TIMELINE_CAP:]
            if not result.ok:
                # The violation is observed when the check that saw it completes, not when it started.
                return DetectResult(
                    detected=True,
                    detected_at=datetime.now(timezone.utc),
                    first_violation=result,
                    checks=checks,
                    timeline=timeline,
                    slow=slow,
                )
            if time.monotonic() >= deadline:
                return DetectResult(detected=False, checks=checks, timeline=timeline)
            await asyncio.sleep(max(0.0, req.interval_s - (time.monotonic() - tick)))


@activity.defn
async def wait_healthy(req: WaitHealthyRequest) -> CheckResult:
    """After restore: wait until every invariant holds again. Fails (retryably) if it does not in time."""
    instance = resolve_or_bad_input(req.subject)
    result = await wait_until_healthy(instance, req.timeout_s, req.check_timeout_s, req.interval_s, req.slow)
    if result is None:
        raise ApplicationError(
            f"subject {instance.subject.name!r} not healthy {req.timeout_s:g}s after restore",
            type=ErrorType.SUBJECT_UNHEALTHY,
        )
    return result
