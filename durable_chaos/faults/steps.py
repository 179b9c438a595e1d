"""An experiment's steps, checked against the subject before anything starts: every fault kind and target valid,
parallel lanes and random schedules within the subject's quorum rule. The CLI asks this when it reads a file (the
error names the file's line) and preflight asks it again (a run started some other way is checked too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable_chaos.contracts import FaultStep, Step
from durable_chaos.faults import BadFault, Fault, make_fault, target_choice
from durable_chaos.quorum import has_quorum

if TYPE_CHECKING:
    from subjects.base import Subject


class BadStep(BadFault):
    """A step that cannot run. `at` is where it is: (step,) or (step, lane, index in the lane), all from 0."""

    def __init__(self, message: str, field: str | None, at: tuple[int, ...]) -> None:
        super().__init__(message, field)
        self.at = at


def spare(subject: Subject) -> int:
    """How many members the subject's quorum rule lets a run take down at once (at least one: hitting one member
    is what every experiment does, even on a subject that cannot spare it)."""
    n, rule = len(subject.targets), subject.hints.quorum
    return max([1, *(k for k in range(n + 1) if has_quorum(rule, n - k, n))])


def check_steps(subject: Subject, steps: list[Step]) -> list[Fault]:
    """Every fault the steps can inject (for their images and kernel needs); BadStep at the first wrong step."""
    faults: list[Fault] = []
    for i, step in enumerate(steps):
        if step.fault is not None:
            faults.append(_fault(subject, step.fault, (i,)))
        for j, lane in enumerate(step.lanes):
            faults += [_fault(subject, s.fault, (i, j, k)) for k, s in enumerate(lane) if s.fault is not None]
        if step.lanes:
            _lanes_within_quorum(subject, step, i)
        if step.random is not None:
            faults += _random(subject, step, i)
    return faults


def _fault(subject: Subject, spec: FaultStep, at: tuple[int, ...]) -> Fault:
    try:
        fault = make_fault(spec.fault, spec.params)
        target_choice(subject, fault, spec.target, spec.count, spec.allow_quorum_loss, roles=None)
    except BadFault as err:
        raise BadStep(str(err), err.field, at) from None
    if spec.duration_s is not None and spec.duration_s > spec.max_fault_s:
        raise BadStep(f"a duration of {spec.duration_s:g}s is past the fault's deadline ({spec.max_fault_s:g}s): "
                      "raise max_seconds or shorten it", "duration", at)
    return fault


def _lanes_within_quorum(subject: Subject, step: Step, i: int) -> None:
    """Lanes run side by side, so each lane's largest fault may be on with every other lane's."""
    at_once = sum(max((s.fault.count for s in lane if s.fault is not None), default=0) for lane in step.lanes)
    allowed = any(s.fault.allow_quorum_loss for lane in step.lanes for s in lane if s.fault is not None)
    n = len(subject.targets)
    if at_once > spare(subject) and not allowed:
        raise BadStep(f"the lanes can hit {at_once} of {n} members of {subject.name} at once, which loses its "
                      f"quorum ({subject.hints.quorum} must stay up): set allow_quorum_loss: true on one of their "
                      "faults to do it anyway", "parallel", (i,))
    named = [s.fault.target for lane in step.lanes for s in lane
             if s.fault is not None and s.fault.target in subject.targets]
    twice = sorted({m for m in named if named.count(m) > 1})
    if twice:
        raise BadStep(f"{', '.join(twice)} is named in two lanes: one member takes one fault at a time", "parallel",
                      (i,))


def _random(subject: Subject, step: Step, i: int) -> list[Fault]:
    spec = step.random
    try:
        faults = [make_fault(kind) for kind in spec.kinds]
    except BadFault as err:
        raise BadStep(str(err), "random.kinds", (i,)) from None
    unknown = [m for m in spec.targets if m not in subject.targets]
    if unknown:
        raise BadStep(f"{', '.join(unknown)} is not a target of {subject.name} (targets: "
                      f"{', '.join(subject.targets)})", "random.targets", (i,))
    if spec.max_at_once > spare(subject):
        raise BadStep(f"max_at_once {spec.max_at_once} is more than {subject.name}'s quorum rule lets go at once "
                      f"({spare(subject)} of {len(subject.targets)})", "random.max_at_once", (i,))
    fixed = [f.kind for f in faults if f.fixed_targets(subject.services) is not None]
    if fixed:
        raise BadStep(f"{', '.join(fixed)} chooses its own members (groups): not for a random schedule",
                      "random.kinds", (i,))
    return faults
