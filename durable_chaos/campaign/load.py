"""Reading a campaign file: the campaign's own fields, then every cell of its matrix read as an experiment file is
read (durable_chaos/experiment/load.py), so a cell's mistake is the same one line naming the file, the line and the
field, raised before anything is started.

Each cell is a YAML node tree assembled from the campaign file's own nodes: the base experiment's, with the subject
node and the first step's fault, params and target nodes taken from the matrix entry. An error in a cell therefore
points at the matrix entry that made it (or at the base experiment's line), with no second bookkeeping of lines.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor

from durable_chaos.campaign.model import Campaign, SubjectCopy
from durable_chaos.contracts import FaultStep
from durable_chaos.contracts.campaign import CampaignCell, CampaignInput
from durable_chaos.experiment.load import (
    BadExperiment,
    Loaded,
    _Where,
    compose_file,
    load_composed,
    load_experiment,
)
from durable_chaos.faults import make_fault
from subjects import resolve

UNION_TAGS = ("str", "SubjectCopy", "MatrixFault")
STR, MAP, SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


@dataclass
class LoadedCampaign:
    path: Path
    campaign: Campaign
    cells: list[Loaded]
    input: CampaignInput


def is_campaign_file(path: Path) -> bool:
    """A YAML mapping with a top-level `campaign:` key; anything else is left to the experiment reader (which says
    what is wrong with it)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "campaign" in data


def load_campaign(path: Path, overrides: dict[str, str] | None = None, project: str | None = None,
                  port_base: int | None = None) -> LoadedCampaign:
    root, data = compose_file(path)
    where = _Where(path, root)
    try:
        # The base experiment is validated per cell (after `${name}` substitution), not here.
        campaign = Campaign.model_validate({k: v for k, v in data.items() if k != "experiment"})
    except ValidationError as err:
        # A matrix entry is a name or a mapping: pydantic reports both branches of the union; the one that says
        # what is wrong is the branch the user wrote (a mapping's field), and the branch's tag is no field.
        errors = err.errors()
        first = next((e for e in errors if "str" not in e["loc"]), errors[0])
        loc = tuple(part for part in first["loc"] if part not in UNION_TAGS)
        raise BadExperiment(where.say(loc, first["msg"].removeprefix("Value error, "))) from None
    matrix = _node(root, "matrix")
    subjects, faults = _items(matrix, "subjects"), _items(matrix, "faults") or [None]
    targets = _items(matrix, "targets") or [None]
    hosts: list[str | None] = list(campaign.matrix.hosts or [None])
    size = len(subjects) * len(faults) * len(targets) * len(hosts)
    if size > campaign.max_cells:
        per_host = f" x {len(hosts)} hosts" if campaign.matrix.hosts else ""
        raise BadExperiment(where.say(("matrix",), f"{size} cells ({len(subjects)} subjects x {len(faults)} faults x "
                                                   f"{len(targets)} targets{per_host}) is more than max_cells "
                                                   f"({campaign.max_cells}): shrink the matrix or raise max_cells"))
    if (project or port_base) and len(subjects) > 1:
        raise BadExperiment(f"{path}: --project/--port-base name one subject copy and this campaign has "
                            f"{len(subjects)}: give each its project and port_base in matrix.subjects")
    base = _base_experiment(path, root)
    loaded, cells = [], []
    for (s_node, entry), host, f_node, t_node in itertools.product(
            zip(subjects, campaign.matrix.subjects), hosts, faults, targets):
        own = entry if isinstance(entry, SubjectCopy) else SubjectCopy(subject=entry)
        cell_root = _cell(base, _subject_node(s_node), f_node, t_node)
        one = load_composed(path, cell_root, SafeConstructor().construct_document(cell_root), overrides,
                            own.project or project, own.port_base if own.port_base is not None else port_base)
        cell = _cell_model(_on_host(one, own.host or host), own, matrix_hosts=campaign.matrix.hosts is not None)
        if any(c.key == cell.key for c in cells):
            raise BadExperiment(where.say(("matrix",), f"cell {cell.key!r} is in the matrix twice"))
        loaded.append(one)
        cells.append(cell)
    return LoadedCampaign(path, campaign, loaded,
                          CampaignInput(name=campaign.campaign, parallelism=campaign.parallelism, cells=cells))


def _node(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((v for k, v in mapping.value if k.value == key), None)


def _items(matrix: yaml.MappingNode, key: str) -> list[yaml.Node]:
    node = _node(matrix, key)
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _base_experiment(path: Path, root: yaml.MappingNode) -> yaml.MappingNode:
    """The base experiment's node: inline, or a file's (read and checked on its own first, so a mistake in it names
    its own file and line). A referenced file's nodes are then marked with the `experiment:` line of the campaign:
    an error only a cell brings out (its target on another subject) points there, in the file being run."""
    node = _node(root, "experiment")
    if node is None:
        return yaml.MappingNode(MAP, [], root.start_mark, root.end_mark)
    if isinstance(node, yaml.MappingNode):
        return node
    if not isinstance(node, yaml.ScalarNode) or node.tag != STR:
        raise BadExperiment(f"{path}:{node.start_mark.line + 1}: experiment: the experiment's fields, or the path "
                            "of an experiment file")
    ref = (path.parent / Path(str(node.value)).expanduser())
    load_experiment(ref)
    included, _ = compose_file(ref)
    for n in _walk(included):
        n.start_mark, n.end_mark = node.start_mark, node.end_mark
    return included


def _walk(node: yaml.Node):
    yield node
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield from _walk(k)
            yield from _walk(v)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            yield from _walk(v)


def _subject_node(node: yaml.Node) -> yaml.Node:
    return _node(node, "subject") if isinstance(node, yaml.MappingNode) else node


def _with(mapping: yaml.MappingNode, key: str, value: yaml.Node, mark: yaml.Node) -> yaml.MappingNode:
    """A copy of `mapping` with `key` set to `value`; a key it lacked is placed at `mark`'s line."""
    pairs = [(k, v) for k, v in mapping.value if k.value != key]
    return yaml.MappingNode(MAP, [*pairs, (yaml.ScalarNode(STR, key, mark.start_mark, mark.end_mark), value)],
                            mapping.start_mark, mapping.end_mark)


def _cell(base: yaml.MappingNode, subject: yaml.Node, fault: yaml.Node | None,
          target: yaml.Node | None) -> yaml.MappingNode:
    cell = _with(copy.copy(base), "subject", subject, subject)
    if fault is None and target is None:
        return cell
    steps = _node(base, "steps")
    marker = fault or target
    if not isinstance(steps, yaml.SequenceNode) or not steps.value:
        steps = yaml.SequenceNode(SEQ, [yaml.MappingNode(MAP, [], marker.start_mark, marker.end_mark)],
                                  marker.start_mark, marker.end_mark)
    first = steps.value[0]
    if isinstance(first, yaml.MappingNode):
        if isinstance(fault, yaml.MappingNode):  # {fault: loss, params: {...}}: the entry's fields, own lines
            first = yaml.MappingNode(MAP, [(k, v) for k, v in first.value if k.value not in ("fault", "params")]
                                     + list(fault.value), first.start_mark, first.end_mark)
        elif fault is not None:  # `kill`: the kind only, with no parameters of the base's kind
            first = _with(first, "fault", fault, fault)
            first = yaml.MappingNode(MAP, [(k, v) for k, v in first.value if k.value != "params"],
                                     first.start_mark, first.end_mark)
        if target is not None:
            first = _with(first, "target", target, target)
    steps = yaml.SequenceNode(SEQ, [first, *steps.value[1:]], steps.start_mark, steps.end_mark)
    return _with(cell, "steps", steps, marker)


def _on_host(one: Loaded, host: str | None) -> Loaded:
    """The cell on `host` (the subject copy's, the matrix's), else on the base experiment's."""
    if host is None:
        return one
    inp = one.run_input
    return dataclasses.replace(one, run_input=inp.model_copy(
        update={"subject": inp.subject.model_copy(update={"host": host})}))


def _cell_model(one: Loaded, own: SubjectCopy, matrix_hosts: bool = False) -> CampaignCell:
    inp = one.run_input
    step = one.steps[0].fault or FaultStep()  # the cell's fault is its first step's
    fault = make_fault(step.fault, step.params).label()  # the kind with its parameters: "loss 30%"
    subject = inp.subject.name + (f"@{own.project}" if own.project else "")
    # A host axis (or a copy's own host) tells cells apart by host; one host for all keeps the keys it had.
    where = f" · on {inp.subject.host}" if (matrix_hosts or own.host) and inp.subject.host else ""
    return CampaignCell(key=f"{subject} · {fault} · {step.target or 'random'}{where}", subject=inp.subject.name,
                        project=resolve(inp.subject).project, fault=fault, target=step.target, run_input=inp,
                        host=inp.subject.host)


def plan_lines(c: LoadedCampaign) -> list[str]:
    """`run CAMPAIGN --dry-run`: every cell, and how they are scheduled."""
    m = c.campaign.matrix
    dims = f"{len(m.subjects)} subjects x {len(m.faults or [None])} faults x {len(m.targets or [None])} targets"
    lines = [f"campaign {c.campaign.campaign} ({c.path})" + (f": {c.campaign.title}" if c.campaign.title else ""),
             f"{len(c.input.cells)} cells ({dims}), {c.campaign.parallelism} at once at most; cells on the same "
             "subject copy run one after the other"]
    for number, cell in enumerate(c.input.cells, start=1):
        lines.append(f"cell {number}: subject {cell.subject} (project {cell.project}"
                     + (f", host {cell.host}" if cell.host else "") + f"), fault {cell.fault}, "
                     f"target {cell.target or 'random'}")
    return lines
