"""What an experiment will do, in words, before anything is touched: `starter.py run FILE --dry-run`.

Everything here is known without the running system: the members a step could hit (who leads is read when the run
starts), what is checked and for how long, the guardrails, and the deadlines (a timeout left unset is the subject's).
"""

from __future__ import annotations

from durable_chaos.experiment.load import Loaded
from durable_chaos.faults import make_fault
from durable_chaos.faults.targeting import ROLE_TARGETS
from durable_chaos.hypothesis import PHASES, describe, source
from durable_chaos.wording import condition_labels

WHO = {None: "a random member", "random": "a random member", "leader": "the leader", "follower": "a follower"}


def _step_lines(where: str, step, loaded: Loaded, at: tuple[int, ...], detect: float, restore: float) -> list[str]:
    subject, e = loaded.subject, loaded.experiment
    if step.random is not None:
        r = step.random
        return [f"{where}: random faults for {r.duration_s:g}s: one every {r.every_s:g}s, each held {r.hold_s:g}s, "
                f"at most {r.max_at_once} at once, drawn from {', '.join(r.kinds)} on "
                f"{', '.join(r.targets or subject.targets)}; seed "
                + (f"{r.seed} (the same schedule every run)" if r.seed is not None else "drawn by the run (the "
                   "report records it; `--seed` replays it)")]
    if step.approval is not None:
        return [f"{where}: wait for `advance` ({step.approval})"]
    if step.load_rate is not None:
        return [f"{where}: load changed to {step.load_rate:g} operations a second"]
    if step.check:
        return [f"{where}: check that every invariant of {subject.name} holds; the run fails if not"]
    if step.until_steady:
        return [f"{where}: wait until every invariant holds, at most {step.wait_s or restore:g}s; the run fails "
                "if not"]
    if step.fault is None:
        return [f"{where}: wait {step.wait_s:g}s"]
    spec, choice = step.fault, loaded.choices[at]
    fault = make_fault(spec.fault, spec.params)
    who = WHO.get(spec.target, spec.target) if choice.count == 1 else f"{choice.count} members"
    by_role = spec.target in ROLE_TARGETS  # who holds the role is read when the step begins: any member may
    could = list(subject.targets) if by_role else choice.must + (choice.pool if choice.count > len(choice.must)
                                                                 else [])
    held = (f"held {spec.duration_s:g}s" if spec.duration_s else "held until detected")
    pad = " " * (len(where) - len(where.lstrip()) + 2)  # under its step, or its lane
    return [f"{where}: {fault.label()} on {who}, {held}; could hit {', '.join(could)}"
            + (" (roles are read when the step begins)" if by_role else ""),
            f"{pad}detect: every invariant of {subject.name} checked every {e.timeouts.detect_interval:g}s, for up to "
            f"{min(detect, spec.duration_s or detect):g}s" + ("" if e.timeouts.detect else " (the subject's default)"),
            f"{pad}undo: at the latest {spec.max_fault_s:g}s after the fault went in; then healthy within {restore:g}s"
            + ("" if e.timeouts.restore else " (the subject's default)")]


def plan_lines(loaded: Loaded) -> list[str]:
    e, subject, inp = loaded.experiment, loaded.subject, loaded.run_input
    project = inp.subject.project or subject.default_project
    port_base = inp.subject.port_base or subject.default_port_base
    detect = e.timeouts.detect or subject.defaults.detect_timeout_s
    restore = e.timeouts.restore or subject.defaults.restore_timeout_s
    lines = [f"experiment {loaded.path}" + (f": {e.title}" if e.title else ""),
             f"subject {subject.name}: project {project}, ports {port_base + 1}-{port_base + subject.ports} on "
             f"127.0.0.1 of Docker host {inp.subject.host or 'this machine'}; brought up and steady within "
             f"{e.timeouts.preflight:g}s, or nothing is touched",
             f"load: {e.load.rate:g} operations a second (open loop), every one recorded and checked for lost data"]
    lines.append(f"countdown: {e.timeouts.countdown}s, then the steps in order")
    for number, step in enumerate(loaded.steps, start=1):
        if step.lanes:
            lines.append(f"step {number}: {len(step.lanes)} lanes side by side; the step ends when every lane has")
            for j, lane in enumerate(step.lanes):
                for k, s in enumerate(lane):
                    lines += _step_lines(f"  lane {j + 1}.{k + 1}", s, loaded, (number - 1, j, k), detect, restore)
        else:
            lines += _step_lines(f"step {number}", step, loaded, (number - 1,), detect, restore)
    for probe in e.hypothesis:
        if probe.sampled:
            lines.append(f"hypothesis: {probe.label} - {probe.what} of {source(probe)}, asked once a load window "
                         f"({inp.load_window_s:g}s); every sample {PHASES[probe.mode]} {describe(probe.tolerance)}; "
                         "the run fails if one does not, or none is taken")
            continue
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
