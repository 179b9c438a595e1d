"""Faults come in pairs: an inject and the restore that undoes exactly it.

Adding a fault kind = one `FaultPair` in `FAULTS` (and its name in `contracts.FaultKind`). Both halves are
idempotent, because Temporal may run an activity more than once: killing a dead container and starting a running
one are both success.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from python_on_whales import Container, DockerException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.docker import compose_client, off_loop, service_container
from activities.probes import resolve_or_bad_input
from contracts import ErrorType, FaultRequest, InjectResult, RestoreResult
from subjects import SubjectInstance


@dataclass(frozen=True)
class FaultPair:
    # is_in_effect tells whether the fault is (still) visible on the container, which makes both halves
    # idempotent and lets a reaper decide what is still broken.
    inject: Callable[[Container], None]
    restore: Callable[[Container], None]
    is_in_effect: Callable[[Container], bool]


FAULTS: dict[str, FaultPair] = {
    "kill": FaultPair(
        inject=lambda c: c.kill("SIGKILL"),
        restore=lambda c: c.start(),
        is_in_effect=lambda c: not c.state.running,
    ),
}


def _target_container(req: FaultRequest) -> tuple[SubjectInstance, Container, FaultPair]:
    instance = resolve_or_bad_input(req.subject)
    if req.target not in instance.subject.targets:
        raise ApplicationError(
            f"{req.target!r} is not a target of subject {instance.subject.name!r}",
            type=ErrorType.BAD_INPUT,
            non_retryable=True,
        )
    if req.fault not in FAULTS:
        raise ApplicationError(f"unknown fault {req.fault!r}", type=ErrorType.BAD_INPUT, non_retryable=True)
    # No separate `docker info` first: it would add ~0.2 s to every restore, and an unreachable daemon already
    # fails the lookup below with the error `off_loop` turns into DockerUnavailable.
    client = compose_client(instance)
    return instance, service_container(client, instance, req.target), FAULTS[req.fault]


def inject_now(req: FaultRequest) -> InjectResult:
    _, container, pair = _target_container(req)
    container.reload()
    if pair.is_in_effect(container):
        # A retry after the kill already happened (worker died before reporting): do not hit it again, and keep
        # the first attempt's timestamp as the best record of when it went down.
        finished = container.state.finished_at
        return InjectResult(
            target=req.target,
            container=container.name,
            injected_at=finished or datetime.now(timezone.utc),
            already_down=True,
        )
    try:
        pair.inject(container)
    except DockerException:
        container.reload()
        if not pair.is_in_effect(container):
            raise
    return InjectResult(target=req.target, container=container.name, injected_at=datetime.now(timezone.utc))


def restore_now(req: FaultRequest) -> RestoreResult:
    started_at = datetime.now(timezone.utc)
    try:
        _, container, pair = _target_container(req)
    except ApplicationError as err:
        if err.type == ErrorType.CONTAINER_GONE:
            return RestoreResult(target=req.target, started_at=started_at, container_gone=True)
        raise
    container.reload()
    if not pair.is_in_effect(container):
        return RestoreResult(target=req.target, started_at=started_at, already_up=True)
    pair.restore(container)
    return RestoreResult(target=req.target, started_at=started_at)


@activity.defn
async def inject_fault(req: FaultRequest) -> InjectResult:
    return await off_loop(inject_now, req)


@activity.defn
async def restore_fault(req: FaultRequest) -> RestoreResult:
    try:
        return await off_loop(restore_now, req)
    except ApplicationError as err:
        if err.type == ErrorType.DOCKER_UNAVAILABLE:
            # Everywhere else Docker being down ends the stage; here it is worth waiting for: the workflow keeps
            # retrying (with backoff) until Docker is back and the node is restored.
            raise ApplicationError(err.message, type=err.type) from err
        raise
