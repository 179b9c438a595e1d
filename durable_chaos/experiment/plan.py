"""What an experiment will do, in words, before anything is touched: `starter.py run FILE --dry-run`.

Everything here is known without the running system: the members a step could hit (who leads is read when the run
starts), what is checked and for how long, the guardrails, and the deadlines (a timeout left unset is the subject's).
"""

from __future__ import annotations

from durable_chaos.experiment.load import Loaded
from durable_chaos.faults.targeting import ROLE_TARGETS
from durable_chaos.hypothesis import PHASES, describe
from durable_chaos.wording import condition_labels

WHO = {None: "a random member", "random": "a random member", "leader": "the leader", "follower": "a follower"}


def plan_lines(loaded: Loaded) -> list[str]:
    e, subject, inp = loaded.experiment, loaded.subject, loaded.run_input
    project = inp.subject.project or subject.default_project
    port_base = inp.subject.port_base or subject.default_port_base
    detect = e.timeouts.detect or subject.defaults.detect_timeout_s
    restore = e.timeouts.restore or subject.defaults.restore_timeout_s
    lines = [f"experiment {loaded.path}" + (f": {e.title}" if e.title else ""),
             f"subject {subject.name}: project {project}, ports {port_base + 1}-{port_base + subject.ports} on "
             f"127.0.0.1; brought up and steady within {e.timeouts.preflight:g}s, or nothing is touched",
             f"load: {e.load.rate:g} operations a second (open loop), every one recorded and checked for lost data"]
    for number, (step, fault, choice) in enumerate(zip(e.steps, loaded.faults, loaded.choices), start=1):
        who = WHO.get(step.target, step.target) if choice.count == 1 else f"{choice.count} members"
        by_role = step.target in ROLE_TARGETS  # who holds the role is read when the run starts: any member may
        could = list(subject.targets) if by_role else choice.must + (choice.pool if choice.count > len(choice.must)
                                                                     else [])
        lines.append(f"step {number}: {fault.label()} on {who} after a {e.timeouts.countdown}s countdown; could hit "
                     f"{', '.join(could)}" + (" (roles are read when the run starts)" if by_role else ""))
        lines.append(f"  detect: every invariant of {subject.name} checked every {e.timeouts.detect_interval:g}s, "
                     f"for up to {detect:g}s" + ("" if e.timeouts.detect else " (the subject's default)"))
        lines.append(f"  undo: at the latest {step.max_seconds:g}s after the fault went in; then healthy within "
                     f"{restore:g}s" + ("" if e.timeouts.restore else " (the subject's default)"))
    for probe in e.hypothesis:
        lines.append(f"hypothesis: {probe.name or probe.figure} - {probe.figure} {PHASES[probe.mode]} "
                     f"{describe(probe.tolerance)}; the run fails if it does not hold")
    if e.stop.on_load or e.stop.watched:
        lines.append(f"stop conditions (undo at once, fail): {'; '.join(condition_labels(e.stop))}")
    for d in e.detectors:
        lines.append(f"your detector: {d.name} (must notice the fault within the detect timeout)")
    lines.append(f"diagnosis: Claude within {e.timeouts.diagnosis:g}s when ANTHROPIC_API_KEY is set, else the "
                 "rules engine; graded against the members hit")
    if e.notify:
        lines.append(f"notify: {e.notify} when the run ends")
    return lines
