"""Who a run may hit: a named member, random, the leader or a follower, `count` of them, within the quorum rule.

The CLI asks this before starting a run (with no roles: it cannot read them yet) and preflight asks it again with
the roles read from the system. Either way the answer is a `TargetChoice`, and the workflow draws from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable_chaos.contracts import TargetChoice
from durable_chaos.faults.base import BadFault, Fault
from durable_chaos.quorum import has_quorum

if TYPE_CHECKING:  # for the annotation only: at run time faults never import subjects, the layer above them
    from subjects.base import Subject

ROLE_TARGETS = ("leader", "follower")


def target_choice(subject: Subject, fault: Fault, target: str | None, count: int, allow_quorum_loss: bool,
                  roles: dict[str, str] | None) -> TargetChoice:
    """Raises BadFault with one line when the request cannot be met. `roles=None`: validate what can be known
    without asking the system (the CLI, before the run starts)."""
    members = list(subject.targets)
    if count < 1:
        raise BadFault(f"--count must be at least 1 (got {count})", "count")
    fixed = fault.fixed_targets(subject.services)
    if fixed is not None:
        if target not in (None, "random") or count != 1:
            raise BadFault(f"{fault.label()}: the groups choose the members; drop --target and --count", "target")
        must, pool, count = fixed, [], len(fixed)
    elif target in (None, "random"):
        must, pool = [], members
    elif target in ROLE_TARGETS:
        role = subject.primary_role
        if not role:
            raise BadFault(f"--target {target}: subject {subject.name} has no roles (no leader to find); "
                           f"name a member or use random", "target")
        if roles is None:  # resolved in preflight; the sizes are known already
            holder = members[0]
        else:
            holder = roles.get(role)
            if holder not in members:
                raise BadFault(f"--target {target}: no target of {subject.name} holds its {role} role now "
                               f"(roles: {', '.join(f'{r}={s}' for r, s in roles.items()) or 'none'})", "target")
        others = [m for m in members if m != holder]
        must, pool = ([holder], others) if target == "leader" else ([], others)
    elif target in members:
        must, pool = [target], [m for m in members if m != target]
    else:
        raise BadFault(f"{target!r} is not a target of {subject.name} "
                       f"(targets: {', '.join(members)}, or random, leader, follower)", "target")
    if count > len(must) + len(pool):
        raise BadFault(f"--count {count} is more than the {len(must) + len(pool)} member(s) --target "
                       f"{target or 'random'} can hit on {subject.name}", "count")
    rule = subject.hints.quorum
    # One member is what every experiment hits (on a subject whose rule cannot spare even one, that is the point
    # of the experiment); hitting several at once is where a run can take more than it meant to.
    if count > 1 and not allow_quorum_loss and not has_quorum(rule, len(members) - count, len(members)):
        raise BadFault(f"hitting {count} of {len(members)} members of {subject.name} loses its quorum "
                       f"({rule} must stay up): add --allow-quorum-loss to do it anyway", "count")
    return TargetChoice(must=must, pool=pool, count=count)
