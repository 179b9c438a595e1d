"""The inject and restore activities: find the members a request names, and let its fault kind act on each.

What a kind does is in `faults/`; here is only what every kind needs: the subject instance, the members'
containers and addresses, and the mapping of failures onto the error types the workflow understands. Both
activities are idempotent, because their fault kinds are.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from python_on_whales import DockerException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.docker import compose_client, handles, off_loop, open_session, project_members
from activities.common import fault_or_bad_input, resolve_or_bad_input
from durable_chaos.contracts import ErrorType, FaultEffect, FaultRequest, InjectResult, RestoreResult, bad_input
from durable_chaos.faults import Fault, Healthy, Target
from subjects import SubjectInstance

# One question to the subject while the undo watches members come back.
MEMBER_CHECK_S = 2.0


def _targets(req: FaultRequest) -> tuple[SubjectInstance, Fault, list[Target], list[str]]:
    """The subject instance, the fault, a Target for every member of the request that has a container, and the
    members that have none."""
    instance = resolve_or_bad_input(req.subject)
    unknown = [m for m in req.members if m not in instance.subject.targets]
    if unknown:
        raise bad_input(f"{', '.join(unknown)} not a target of subject {instance.subject.name!r}")
    fault = fault_or_bad_input(req.fault, req.params)
    found = member_targets(instance, req.members, req.tag)
    return instance, fault, found, [m for m in req.members if m not in {t.service for t in found}]


def member_targets(instance: SubjectInstance, members: list[str], tag: str) -> list[Target]:
    """A Target for every one of `members` that has a container (with every member's addresses: its peers)."""
    # One lookup for the whole project (no separate `docker info` first: an unreachable daemon fails it with the
    # error `off_loop` turns into DockerUnavailable).
    found = project_members(instance)
    containers = handles(compose_client(instance), found)
    addresses = {service: list(m.addresses) for service, m in found.items()}
    subject = instance.subject
    return [Target(service=m, container=containers[m], addresses=addresses, tag=tag,
                   data_path=subject.data_paths.get(m), clock_file=subject.clock_files.get(m),
                   data_files=subject.data_files, rejoins_empty=subject.rejoins_empty)
            for m in members if m in containers]


def healthy_members(instance: SubjectInstance) -> Healthy:
    """Which members the subject's own check finds healthy now, asked from the undo's thread (a loop of its own per
    question). A check that cannot even be asked (its session cannot open) finds nobody healthy."""
    async def ask() -> set[str]:
        async with open_session(instance) as session:
            result = await session.check(MEMBER_CHECK_S)
        return {m.service for m in result.members if m.healthy}

    def healthy() -> set[str]:
        try:
            return asyncio.run(asyncio.wait_for(ask(), 2 * MEMBER_CHECK_S))
        except Exception:  # noqa: BLE001 - whatever a subject's client raises, the member is not healthy yet
            return set()
    return healthy


def inject_now(req: FaultRequest) -> InjectResult:
    _, fault, targets, gone = _targets(req)
    if gone:
        raise ApplicationError(f"no container for {', '.join(gone)} in project {req.subject.project!r}",
                               type=ErrorType.CONTAINER_GONE, non_retryable=True)
    injected_at: datetime | None = None
    began: datetime | None = None  # as the kind tells it, for one that takes a while
    # The fault may take effect anywhere inside the inject (a partition's rules go in after its helper starts), so
    # load sent from this moment on is not steady state any more.
    inject_began = datetime.now(timezone.utc)
    did_any = False
    for t in targets:
        try:
            did = fault.inject(t)
        except DockerException:
            if not fault.in_effect(t):  # it failed, unless the fault is there anyway (a race with a retry)
                raise
            did = False
        if not did and injected_at is None:
            # A retry after the fault already happened (the worker died before reporting): do not hit it again,
            # and keep the first attempt's time as the best record of when it began, where the container tells.
            injected_at = fault.in_effect_since(t)
        if did and began is None:
            began = fault.began_at(t)
        did_any |= did
    if did_any:
        injected_at = began or datetime.now(timezone.utc)
    return InjectResult(target=req.target, targets=req.members, container=targets[0].container.name,
                        injected_at=injected_at or datetime.now(timezone.utc), already_down=not did_any,
                        began_at=inject_began if did_any else None)


def restore_now(req: FaultRequest) -> RestoreResult:
    started_at = datetime.now(timezone.utc)
    try:
        instance, fault, targets, gone = _targets(req)
    except ApplicationError as err:
        if err.type == ErrorType.CONTAINER_GONE:
            return RestoreResult(target=req.target, started_at=started_at, container_gone=True)
        raise
    if not targets:  # the subject copy was torn down: nothing left to restore
        return RestoreResult(target=req.target, started_at=started_at, container_gone=True)
    undone = fault.undo_all(targets, healthy_members(instance))
    return RestoreResult(target=req.target, started_at=started_at, already_up=not any(undone),
                         repaired=[note for t in targets if (note := fault.repaired(t))])


def effect_now(req: FaultRequest) -> FaultEffect:
    """The kind's own evidence on every member hit; the fault took effect if it did something on any of them."""
    _, fault, targets, _ = _targets(req)
    seen = [e for e in (fault.evidence_of_effect(t) for t in targets) if e]
    return FaultEffect(took_effect=bool(seen), evidence=seen)


@activity.defn
async def confirm_fault(req: FaultRequest) -> FaultEffect:
    return await off_loop(effect_now, req)


@activity.defn
async def inject_fault(req: FaultRequest) -> InjectResult:
    return await off_loop(inject_now, req)


@activity.defn
async def restore_fault(req: FaultRequest) -> RestoreResult:
    try:
        result = await off_loop(restore_now, req)
    except ApplicationError as err:
        if err.type == ErrorType.DOCKER_UNAVAILABLE:
            # Everywhere else Docker being down ends the stage; here it is worth waiting for: the workflow keeps
            # retrying (with backoff) until Docker is back and the node is restored.
            raise ApplicationError(err.message, type=err.type) from err
        raise
    info = activity.info()
    if info.attempt > 1:  # earlier attempts failed (the server retried them): the undo began with the first
        result = result.model_copy(update={"attempt": info.attempt, "first_attempt_at": info.scheduled_time})
    return result
