"""Reading an experiment file: YAML, `${name}` variables, the model, then what needs the subject (its members, the
fault kinds, the quorum rule). Whatever is wrong is one `BadExperiment` line naming the file, the line and the
field, raised before anything is started or injected.

The line comes from the YAML node the field was read from: PyYAML's composer keeps each node's position, which
`yaml.safe_load`'s plain data drops, so the file is composed once and the data is built from those nodes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from durable_chaos.contracts import ChaosInput, FaultStep, RandomSchedule, Step, SubjectRef, TargetChoice
from durable_chaos.experiment.model import Experiment, default
from durable_chaos.experiment.model import LaneStep as FileLaneStep
from durable_chaos.experiment.model import Step as FileStep
from durable_chaos.faults import BadFault, make_fault, target_choice
from durable_chaos.faults.steps import BadStep, check_steps
from durable_chaos.slow import slow_rule
from subjects import BadSubjectFile, UnknownSubject, get_subject
from subjects.base import Subject
from subjects.registry import is_folder_ref

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class BadExperiment(ValueError):
    """An experiment file that cannot run: `FILE:LINE: FIELD: what is wrong`, one line (exit 2)."""


@dataclass
class Loaded:
    """An experiment as read, with what was resolved from it: the subject, the steps as the run takes them, the
    members each fault may hit, the run input."""

    path: Path
    experiment: Experiment
    subject: Subject
    steps: list[Step]
    choices: dict[tuple[int, ...], TargetChoice]  # per fault, by where it is (fault_specs): who it may hit
    run_input: ChaosInput


def load_experiment(path: Path, overrides: dict[str, str] | None = None, project: str | None = None,
                    port_base: int | None = None) -> Loaded:
    root, data = _compose(path)
    return load_composed(path, root, data, overrides, project, port_base)


def compose_file(path: Path) -> tuple[yaml.MappingNode, dict]:
    """A YAML file's nodes (for line numbers) and the data built from them, read as an experiment file is: a
    campaign file is read this way too."""
    return _compose(path)


def load_composed(path: Path, root: yaml.MappingNode, data: dict, overrides: dict[str, str] | None = None,
                  project: str | None = None, port_base: int | None = None) -> Loaded:
    """An experiment already composed: `data` built from `root`, whose nodes give the lines errors name. A campaign
    cell comes in here, its node tree assembled from the campaign file (durable_chaos/campaign/load.py)."""
    where = _Where(path, root)
    declared = _declared_vars(data, where)
    values = {**declared, **_known_overrides(overrides or {}, declared, path)}
    try:
        experiment = Experiment.model_validate(_substitute(data, values, where, ()))
    except ValidationError as err:
        first = err.errors()[0]
        raise BadExperiment(where.say(first["loc"], first["msg"].removeprefix("Value error, "))) from None
    subject = _subject(experiment, path, where)
    _check_probes(experiment, subject, where)
    steps = [wire_step(step) for step in experiment.steps]
    try:
        check_steps(subject, steps)
    except BadStep as err:
        raise BadExperiment(where.say(_file_loc(err), _file_words(str(err)))) from None
    choices = {at: _choice(spec, subject) for at, spec in fault_specs(steps)}
    return Loaded(path, experiment, subject, steps, choices,
                  run_input(experiment, subject, steps, _subject_arg(experiment.subject, path), project, port_base))


def _compose(path: Path) -> tuple[yaml.MappingNode, dict]:
    """The file's YAML nodes (for line numbers) and the data built from those same nodes: one parse."""
    loader = yaml.SafeLoader(_read(path))
    try:
        root = loader.get_single_node() or yaml.compose("{}", Loader=yaml.SafeLoader)
        if not isinstance(root, yaml.MappingNode):
            raise BadExperiment(f"{path}:{root.start_mark.line + 1}: an experiment is a mapping of fields "
                                "(subject:, steps:, ...)")
        return root, loader.construct_document(root)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise BadExperiment(f"{path}:{mark.line + 1 if mark else 1}: not YAML: "
                            f"{getattr(err, 'problem', None) or err}") from None
    finally:
        loader.dispose()


def run_input(e: Experiment, subject: Subject, steps: list[Step], subject_arg: str, project: str | None,
              port_base: int | None) -> ChaosInput:
    """The run input: a one-fault experiment is what `chaos` builds from its flags; more steps go in `steps` (the
    top-level fault fields are then the first fault's, which the run's search attributes and summary name)."""
    first = next((s.fault for s in steps if s.fault is not None), FaultStep())
    folder = str(Path(subject_arg).resolve()) if is_folder_ref(subject_arg) else None
    one_fault = len(steps) == 1 and steps[0].fault is not None and steps[0].fault.duration_s is None
    return ChaosInput(
        subject=SubjectRef(name=subject.name, folder=folder, project=project, port_base=port_base, host=e.host),
        fault=first.fault, fault_params=first.params, target=first.target, count=first.count,
        allow_quorum_loss=first.allow_quorum_loss, max_fault_s=first.max_fault_s,
        countdown_s=e.timeouts.countdown, detect_timeout_s=e.timeouts.detect,
        detect_interval_s=e.timeouts.detect_interval, restore_timeout_s=e.timeouts.restore,
        preflight_timeout_s=e.timeouts.preflight, diagnosis_deadline_s=e.timeouts.diagnosis,
        load_rate=e.load.rate, stop=e.stop, detectors=e.detectors, hypothesis=e.hypothesis, notify_url=e.notify,
        slow=None if e.slow is None else slow_rule(subject.defaults.slow, e.slow.model_dump(exclude_unset=True)),
        steps=[] if one_fault else steps)


def with_seed(loaded: Loaded, seed: int) -> Loaded:
    """The experiment with `seed` for every random schedule (`run --seed`): the same seed, the same schedule."""
    if not any(s.random is not None for s in loaded.steps):
        raise BadExperiment(f"{loaded.path}: --seed {seed}: the file has no random step (steps: - random: ...)")
    steps = [s.model_copy(update={"random": s.random.model_copy(update={"seed": seed})}) if s.random else s
             for s in loaded.steps]
    inp = loaded.run_input
    return dataclasses.replace(loaded, steps=steps, run_input=inp.model_copy(update={"steps": steps}))


def wire_step(step: FileStep | FileLaneStep) -> Step:
    """A step as the file writes it, as the run takes it."""
    if step.kinds == ["parallel"]:
        return Step(name=step.name, lanes=[[wire_step(s) for s in lane] for lane in step.parallel])
    if step.kinds == ["random"]:
        r = step.random
        return Step(name=step.name, random=RandomSchedule(
            duration_s=r.duration, kinds=r.kinds, targets=r.targets, every_s=r.every, hold_s=r.hold,
            max_at_once=r.max_at_once, seed=r.seed))
    if step.kinds == ["wait"]:
        steady = step.wait == "steady"
        return Step(name=step.name, until_steady=steady, wait_s=None if steady else step.wait)
    if step.kinds == ["load"]:
        return Step(name=step.name, load_rate=step.load.rate)
    if step.kinds == ["approval"]:
        return Step(name=step.name, approval=step.approval)
    if step.kinds == ["check"]:
        return Step(name=step.name, check=True)
    kind = step.fault or default("fault")
    try:  # the parameters as the kind reads them (defaults dropped), as `chaos --param` gives them
        params = make_fault(kind, step.params).params.model_dump(mode="json", exclude_defaults=True)
    except BadFault:
        params = step.params  # check_steps says what is wrong with them, and where
    return Step(name=step.name, fault=FaultStep(
        fault=kind, params=params, target=step.target, count=step.count, allow_quorum_loss=step.allow_quorum_loss,
        duration_s=step.duration, max_fault_s=step.max_seconds))


def fault_specs(steps: list[Step]) -> list[tuple[tuple[int, ...], FaultStep]]:
    """Every fault step, with where it is: (step,) or (step, lane, index), from 0."""
    found = []
    for i, step in enumerate(steps):
        if step.fault is not None:
            found.append(((i,), step.fault))
        for j, lane in enumerate(step.lanes):
            found += [((i, j, k), s.fault) for k, s in enumerate(lane) if s.fault is not None]
    return found


def _choice(spec: FaultStep, subject: Subject) -> TargetChoice:
    fault = make_fault(spec.fault, spec.params)
    return target_choice(subject, fault, spec.target, spec.count, spec.allow_quorum_loss, roles=None)


def _file_loc(err: BadStep) -> tuple:
    """Where a step's error is in the file: its step (and lane), then its field as the file names it."""
    at = err.at
    loc: tuple = ("steps", at[0]) + (("parallel", at[1], at[2]) if len(at) == 3 else ())
    field = {"kind": "fault"}.get(err.field, err.field)
    return loc + (tuple(field.split(".")) if field else ())


def _file_words(message: str) -> str:
    """The catalog's messages name `chaos`'s flags; in a file they are fields."""
    return (message.replace("--target", "target").replace("--count", "count")
            .replace("--allow-quorum-loss", "allow_quorum_loss: true"))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise BadExperiment(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise BadExperiment(f"{path}: cannot read it: {err}") from None


class _Where:
    """Finds the line a field came from: walks the composed YAML along a pydantic error's location."""

    def __init__(self, path: Path, root: yaml.MappingNode) -> None:
        self.path, self.root = path, root

    def line(self, loc: tuple) -> int:
        node, line = self.root, self.root.start_mark.line + 1
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        line, child = key.start_mark.line + 1, value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:  # a field the file does not have (missing, or a default): its parent's line
                break
            node = child
        return line

    def say(self, loc: tuple, message: str) -> str:
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        return f"{self.path}:{self.line(loc)}: {field or 'file'}: {message}"


def _declared_vars(data: dict, where: _Where) -> dict[str, str]:
    declared = data.get("vars", {})
    if not isinstance(declared, dict):
        raise BadExperiment(where.say(("vars",), "a mapping of names to values, e.g. {victim: leader}"))
    return {str(k): str(v) for k, v in declared.items()}


def _known_overrides(overrides: dict[str, str], declared: dict[str, str], path: Path) -> dict[str, str]:
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise BadExperiment(f"{path}: --set {unknown[0]}: the file declares no such variable (vars: "
                            f"{', '.join(declared) or 'none'})")
    return overrides


def _substitute(value: Any, values: dict[str, str], where: _Where, loc: tuple) -> Any:
    """`${name}` in every string (keys and `vars` itself excepted); a string that is only `${name}` becomes the
    value as written (the model then reads `count: ${n}` as a number)."""
    if isinstance(value, dict):
        return {k: v if loc == () and k == "vars" else _substitute(v, values, where, (*loc, k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, where, (*loc, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    for name in VARIABLE.findall(value):
        if name not in values:
            known = ", ".join(values) or "none"
            raise BadExperiment(where.say(loc, f"${{{name}}} is not a variable (vars: {known})"))
    return VARIABLE.sub(lambda m: values[m.group(1)], value)


def _subject_arg(subject: str, path: Path) -> str:
    """A subject folder is relative to the experiment file, wherever the command runs from."""
    return str((path.parent / Path(subject).expanduser()).resolve()) if is_folder_ref(subject) else subject


def _check_probes(e: Experiment, subject: Subject, where: _Where) -> None:
    """What the model cannot know: a member an exec probe runs in, and one name per sampled probe (its samples are
    kept by name)."""
    seen: set[str] = set()
    for i, probe in enumerate(e.hypothesis):
        if probe.exec_ and probe.exec_.service not in subject.services:
            raise BadExperiment(where.say(("hypothesis", i, "exec", "service"), f"{probe.exec_.service!r} is not a "
                                          f"member of {subject.name} (members: {', '.join(subject.services)})"))
        if probe.sampled and probe.label in seen:
            raise BadExperiment(where.say(("hypothesis", i, "name"), f"another probe is named {probe.label!r}: "
                                          "give each its own name"))
        seen.add(probe.label)


def _subject(e: Experiment, path: Path, where: _Where) -> Subject:
    try:
        return get_subject(_subject_arg(e.subject, path))
    except (UnknownSubject, BadSubjectFile) as err:
        raise BadExperiment(where.say(("subject",), str(err))) from None
