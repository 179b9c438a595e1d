"""The plan, decided once in workflow code right after preflight: which members the run hits, and the timeouts it
runs with. A replay or a retried activity can never pick another member: the draw uses `workflow.random()`, whose
seed is in the history."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import ChaosInput, FaultRequest, PreflightResult, TargetChoice, bad_input
    from durable_chaos.ids import fault_tag


def draw(choice: TargetChoice, randrange: Callable[[int], int]) -> list[str]:
    """`choice.count` members: every one of `must`, the rest at random from `pool`. One `randrange` per member, so
    a single random target is drawn exactly as runs before the fault catalog drew it (their replays stay the same)."""
    picked = list(choice.must[:choice.count])
    pool = [m for m in choice.pool if m not in picked]
    while len(picked) < choice.count and pool:
        picked.append(pool.pop(randrange(len(pool))))
    return picked


def fault_request(inp: ChaosInput, pre: PreflightResult) -> FaultRequest:
    """The fault this run injects and undoes, on members drawn here; bad input if they are not targets."""
    targets = draw(pre.choice, workflow.random().randrange)
    if not targets or any(t not in pre.targets for t in targets):  # preflight checks this too; never trust input
        raise bad_input(f"{inp.target!r} is not a target")
    info = workflow.info()
    return FaultRequest(subject=inp.subject, fault=inp.fault, target=targets[0], targets=targets,
                        params=inp.fault_params, tag=fault_tag(info.workflow_id, info.run_id))


def with_subject_defaults(inp: ChaosInput, pre: PreflightResult) -> ChaosInput:
    """Unset timeouts take the subject's own defaults (a Patroni failover is slower than an etcd re-election)."""
    return inp.model_copy(update={
        "detect_timeout_s": inp.detect_timeout_s or pre.defaults.detect_timeout_s,
        "restore_timeout_s": inp.restore_timeout_s or pre.defaults.restore_timeout_s,
    })
