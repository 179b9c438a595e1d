"""Reading an experiment file: YAML, `${name}` variables, the model, then what needs the subject (its members, the
fault kinds, the quorum rule). Whatever is wrong is one `BadExperiment` line naming the file, the line and the
field, raised before anything is started or injected.

The line comes from the YAML node the field was read from: PyYAML's composer keeps each node's position, which
`yaml.safe_load`'s plain data drops, so the file is composed once and the data is built from those nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from durable_chaos.contracts import ChaosInput, SubjectRef, TargetChoice
from durable_chaos.experiment.model import Experiment
from durable_chaos.faults import BadFault, Fault, make_fault, target_choice
from subjects import BadSubjectFile, UnknownSubject, get_subject
from subjects.base import Subject
from subjects.registry import is_folder_ref

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class BadExperiment(ValueError):
    """An experiment file that cannot run: `FILE:LINE: FIELD: what is wrong`, one line (exit 2)."""


@dataclass
class Loaded:
    """An experiment as read, with what was resolved from it: the subject, each step's fault and the members it may
    hit, the run input."""

    path: Path
    experiment: Experiment
    subject: Subject
    faults: list[Fault]
    choices: list[TargetChoice]  # per step: who it may hit (roles unread: the run reads them at its start)
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
    checked = [_fault(step, i, subject, where) for i, step in enumerate(experiment.steps)]
    faults, choices = [f for f, _ in checked], [c for _, c in checked]
    return Loaded(path, experiment, subject, faults, choices,
                  run_input(experiment, subject, faults, _subject_arg(experiment.subject, path), project, port_base))


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


def run_input(e: Experiment, subject: Subject, faults: list[Fault], subject_arg: str, project: str | None,
              port_base: int | None) -> ChaosInput:
    """The one-step experiment as the run input `chaos` builds from its flags."""
    step, fault = e.steps[0], faults[0]
    folder = str(Path(subject_arg).resolve()) if is_folder_ref(subject_arg) else None
    return ChaosInput(
        subject=SubjectRef(name=subject.name, folder=folder, project=project, port_base=port_base),
        fault=step.fault, fault_params=fault.params.model_dump(mode="json", exclude_defaults=True),
        target=step.target, count=step.count, allow_quorum_loss=step.allow_quorum_loss, max_fault_s=step.max_seconds,
        countdown_s=e.timeouts.countdown, detect_timeout_s=e.timeouts.detect,
        detect_interval_s=e.timeouts.detect_interval, restore_timeout_s=e.timeouts.restore,
        preflight_timeout_s=e.timeouts.preflight, diagnosis_deadline_s=e.timeouts.diagnosis,
        load_rate=e.load.rate, stop=e.stop, detectors=e.detectors, hypothesis=e.hypothesis, notify_url=e.notify)


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


def _subject(e: Experiment, path: Path, where: _Where) -> Subject:
    try:
        return get_subject(_subject_arg(e.subject, path))
    except (UnknownSubject, BadSubjectFile) as err:
        raise BadExperiment(where.say(("subject",), str(err))) from None


def _fault(step, index: int, subject: Subject, where: _Where) -> tuple[Fault, TargetChoice]:
    """The step's fault and who it may hit, or the line of the field that is wrong. The catalog's messages name
    `chaos`'s flags; in a file they are fields."""
    try:
        fault = make_fault(step.fault, step.params)
        choice = target_choice(subject, fault, step.target, step.count, step.allow_quorum_loss, roles=None)
    except BadFault as err:
        field = {"kind": "fault"}.get(err.field, err.field or "fault")
        message = (str(err).replace("--target", "target").replace("--count", "count")
                   .replace("--allow-quorum-loss", "allow_quorum_loss: true"))
        raise BadExperiment(where.say(("steps", index, field), message)) from None
    return fault, choice
