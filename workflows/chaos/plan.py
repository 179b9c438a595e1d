"""The plan, decided once in workflow code right after preflight: which members the run hits, and the timeouts it
runs with. A replay or a retried activity can never pick another member: the draw uses `workflow.random()`, whose
seed is in the history."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        ChaosInput,
        FaultRequest,
        FaultStep,
        PreflightResult,
        RandomSchedule,
        TargetChoice,
        bad_input,
    )
    from durable_chaos.ids import fault_tag


def draw(choice: TargetChoice, randrange: Callable[[int], int]) -> list[str]:
    """`choice.count` members: every one of `must`, the rest at random from `pool`. One `randrange` per member, so
    a single random target is drawn exactly as runs before the fault catalog drew it (their replays stay the same)."""
    picked = list(choice.must[:choice.count])
    pool = [m for m in choice.pool if m not in picked]
    while len(picked) < choice.count and pool:
        picked.append(pool.pop(randrange(len(pool))))
    return picked


def fault_request(inp: ChaosInput, step: FaultStep, pre: PreflightResult) -> FaultRequest:
    """The first step's fault, on members drawn here from preflight's choice; bad input if they are not targets."""
    targets = draw(pre.choice, workflow.random().randrange)
    if not targets or any(t not in pre.targets for t in targets):  # preflight checks this too; never trust input
        raise bad_input(f"{step.target!r} is not a target")
    info = workflow.info()
    return FaultRequest(subject=inp.subject, fault=step.fault, target=targets[0], targets=targets,
                        params=step.params, tag=fault_tag(info.workflow_id, info.run_id))


# Room for an undo to complete after a fault's hold ends, before the next fault may hit that member.
UNDO_MARGIN_S = 3.0


@dataclass(frozen=True)
class Drawn:
    offset_s: float  # from the random step's start
    kind: str
    target: str


def random_schedule(spec: RandomSchedule, targets: list[str], spare: int, seed: int) -> list[Drawn]:
    """A random step's faults, a pure function of its seed: the same seed, spec and members give the same schedule
    (`--seed` replays a run's). One slot every `every_s`; a slot draws a kind and a member, or stays empty when
    `max_at_once` (never above what the quorum rule can spare) faults are already on. A fault counts as on for its
    hold plus UNDO_MARGIN_S, so an undo that ends late never meets the next fault on the same member."""
    rng = random.Random(seed)
    members = sorted(spec.targets or targets)
    limit = min(spec.max_at_once, max(spare, 1))
    drawn: list[Drawn] = []
    slots = int(spec.duration_s // spec.every_s) + (1 if spec.duration_s % spec.every_s else 0)
    for slot in range(slots):
        at = round(slot * spec.every_s, 3)
        on = [d for d in drawn if d.offset_s + spec.hold_s + UNDO_MARGIN_S > at]
        free = [m for m in members if m not in {d.target for d in on}]
        kind = rng.choice(spec.kinds)
        pick = rng.randrange(len(free)) if free else 0
        if len(on) >= limit or not free:
            continue
        drawn.append(Drawn(at, kind, free[pick]))
    return drawn


def with_subject_defaults(inp: ChaosInput, pre: PreflightResult) -> ChaosInput:
    """Unset timeouts take the subject's own defaults (a Patroni failover is slower than an etcd re-election)."""
    return inp.model_copy(update={
        "detect_timeout_s": inp.detect_timeout_s or pre.defaults.detect_timeout_s,
        "restore_timeout_s": inp.restore_timeout_s or pre.defaults.restore_timeout_s,
    })
