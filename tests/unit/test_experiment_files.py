"""Experiment files as a user writes them: every example checks out with `--dry-run`, bad input is one line naming
the file, the line and the field (exit 2, nothing started), variables and defaults behave. No server, no Docker:
a dry run reads only the subject's definition."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durable_chaos.cli.app import app
from durable_chaos.cli.run_input import chaos_input
from durable_chaos.contracts import ChaosInput, StopConditions, SubjectRef
from durable_chaos.experiment.load import BadExperiment, load_experiment
from durable_chaos.experiment.model import schema
from tests.conftest import run_command

ROOT = Path(__file__).resolve().parents[2]
# Campaign files (campaign-*.yaml) are tested in test_campaign_files.py.
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if not p.name.startswith("campaign-"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def test_examples_exist_for_each_shipped_subject_and_a_folder():
    subjects = {load_experiment(p).subject.name for p in EXAMPLES}
    assert subjects >= {"etcd", "nats", "postgres", "redis"}, subjects  # redis: the worked example's folder


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_a_dry_run_that_touches_nothing(example, monkeypatch):
    # The command line in this process (a subprocess per example would cost a second of imports each); the exit
    # code of a real process is the next tests' business.
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["run", str(example.relative_to(ROOT)), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"experiment {example.relative_to(ROOT)}")
    assert any(line.startswith("step 1: ") for line in lines), result.output
    # Every fault says who it could hit and when it is undone at the latest; a random schedule, what it draws.
    assert any("could hit" in line for line in lines) or any("random faults for" in line for line in lines)
    assert any("undo: at the latest" in line for line in lines) or any("held" in line for line in lines)
    assert lines[-1] == "dry run: nothing was started or touched"


def test_an_empty_file_is_the_default_run_chaos_makes_without_flags(tmp_path):
    # One definition of every default: the file's fields and `chaos`'s flags both read the run input's.
    from_file = load_experiment(write(tmp_path, "")).run_input
    assert from_file == ChaosInput(subject=SubjectRef(name="etcd"))
    from_flags = chaos_input("etcd", None, None, 0.5, 3, None, None, 120.0, guards=(StopConditions(), []))
    assert from_file == from_flags


def test_a_file_says_what_the_same_flags_say(tmp_path):
    path = write(tmp_path, """subject: etcd
steps:
  - fault: loss
    params: {percent: 40}
    target: etcd3
    max_seconds: 30
load: {rate: 50}
timeouts: {countdown: 0, detect: 12}
""")
    flags = chaos_input("etcd", "etcd3", 12, 0.5, 0, None, None, 30.0, load_rate=50, fault="loss",
                        params=["percent=40"], guards=(StopConditions(), []))
    assert load_experiment(path).run_input == flags


@pytest.mark.parametrize("text, where", [
    ("subject: etcd\nstepz: []\n", "experiment.yaml:2: stepz: Extra inputs are not permitted"),
    ("subject: etcd\nload:\n  rate: fast\n", "experiment.yaml:3: load.rate: Input should be a valid number"),
    ("subject: etcd\nsteps:\n  - fault: kill\n    target: etcd9\n",
     "experiment.yaml:4: steps[0].target: 'etcd9' is not a target of etcd"),
    ("subject: etcd\nsteps:\n  - fault: melt\n", "experiment.yaml:3: steps[0].fault: unknown fault 'melt'"),
    ("subject: etcd\nsteps:\n  - fault: loss\n    params: {percent: 300}\n",
     "experiment.yaml:4: steps[0].params: fault loss: percent=300 is invalid"),
    ("subject: etcd\nsteps:\n  - target: leader\n    count: 2\n",
     "experiment.yaml:4: steps[0].count: hitting 2 of 3 members of etcd loses its quorum"),
    ("subject: nope\n", "experiment.yaml:1: subject: unknown subject 'nope'"),
    ("subject: [etcd\n", "experiment.yaml:2: not YAML: "),
    ("- kill\n", "experiment.yaml:1: an experiment is a mapping of fields"),
    ("steps:\n  - target: ${who}\n", "experiment.yaml:2: steps[0].target: ${who} is not a variable (vars: none)"),
])
def test_bad_input_is_one_line_with_the_file_line_and_field(tmp_path, text, where):
    with pytest.raises(BadExperiment) as err:
        load_experiment(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "experiment.yaml")), message
    assert where in message, message


def test_bad_input_exits_2_with_that_line_and_starts_nothing(tmp_path):
    path = write(tmp_path, "subject: etcd\nsteps:\n  - fault: kill\n    target: etcd9\n")
    proc = run_command([sys.executable, "starter.py", "run", str(path)], env=None, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:4: steps[0].target: 'etcd9' is not a target of etcd (targets: etcd1, etcd2, etcd3, or "
        "random, leader, follower)"]
    assert proc.stdout == ""


def test_variables_are_substituted_and_set_overrides_only_declared_ones(tmp_path):
    path = write(tmp_path, "title: lose ${percent}% of ${victim}\nvars: {victim: etcd2, percent: 40}\n"
                           "steps:\n  - fault: loss\n    target: ${victim}\n    params: {percent: '${percent}'}\n")
    loaded = load_experiment(path, {"victim": "etcd3"})
    assert loaded.experiment.title == "lose 40% of etcd3"
    assert (loaded.run_input.target, loaded.run_input.fault_params) == ("etcd3", {"percent": 40})
    with pytest.raises(BadExperiment, match=r"--set victm: the file declares no such variable \(vars: victim, "):
        load_experiment(path, {"victm": "etcd3"})


def test_a_subject_folder_is_read_relative_to_the_file(tmp_path):
    loaded = load_experiment(ROOT / "examples" / "my-subject-stop.yaml")
    assert loaded.run_input.subject.folder == str(ROOT / "tests" / "data" / "my-subject")


def test_the_published_schema_is_the_models():
    published = json.loads((ROOT / "durable_chaos" / "experiment" / "experiment.schema.json").read_text())
    assert published == schema(), "run: python starter.py run --schema > durable_chaos/experiment/experiment.schema.json"


MULTI_STEP = """subject: etcd
steps:
  - name: cut the leader off
    fault: partition
    target: leader
    duration: 10
  - wait: steady
  - approval: look at the dashboards
  - load: {rate: 50}
  - parallel:
      - - fault: pause
          target: etcd1
          duration: 5
          allow_quorum_loss: true
      - - wait: 1
        - fault: loss
          target: etcd2
          params: {percent: 30}
          duration: 5
  - random: {duration: 30, kinds: [kill, pause], every: 10, hold: 4, seed: 7}
  - check: steady
"""


def test_a_multi_step_file_becomes_the_steps_the_run_takes_and_its_plan_names_each(tmp_path):
    loaded = load_experiment(write(tmp_path, MULTI_STEP))
    steps = loaded.run_input.steps
    assert [s.kind for s in steps] == ["fault", "wait", "approval", "load", "parallel", "random", "check"]
    assert steps[0].fault.duration_s == 10 and steps[0].name == "cut the leader off"
    assert steps[1].until_steady and steps[3].load_rate == 50
    assert [[s.kind for s in lane] for lane in steps[4].lanes] == [["fault"], ["wait", "fault"]]
    assert steps[5].random.seed == 7 and steps[5].random.kinds == ["kill", "pause"]
    # The run's headline (summary, search attributes) is its first fault.
    assert (loaded.run_input.fault, loaded.run_input.target) == ("partition", "leader")
    result = CliRunner().invoke(app, ["run", str(loaded.path), "--dry-run"])
    assert result.exit_code == 0, result.output
    for line in ("step 1: partition on the leader, held 10s; could hit etcd1, etcd2, etcd3",
                 "step 2: wait until every invariant holds", "step 3: wait for `advance` (look at the dashboards)",
                 "step 5: 2 lanes side by side", "  lane 2.2: loss 30% on etcd2, held 5s",
                 "step 6: random faults for 30s: one every 10s, each held 4s, at most 1 at once",
                 "step 7: check that every invariant of etcd holds"):
        assert any(line in out for out in result.output.splitlines()), (line, result.output)


@pytest.mark.parametrize("steps, where", [
    ("  - parallel:\n      - - fault: kill\n          target: etcd9\n      - - fault: pause\n",
     "experiment.yaml:5: steps[0].parallel[0][0].target: 'etcd9' is not a target of etcd"),
    ("  - parallel:\n      - - fault: kill\n      - - fault: melt\n",
     "experiment.yaml:5: steps[0].parallel[1][0].fault: unknown fault 'melt'"),
    ("  - parallel:\n      - - fault: kill\n      - - fault: pause\n",
     "experiment.yaml:3: steps[0].parallel: the lanes can hit 2 of 3 members of etcd at once, which loses its quorum"),
    ("  - random: {kinds: [kill], max_at_once: 2}\n",
     "experiment.yaml:3: steps[0].random.max_at_once: max_at_once 2 is more than etcd's quorum rule lets go"),
    ("  - random: {kinds: [melt]}\n", "experiment.yaml:3: steps[0].random.kinds: unknown fault 'melt'"),
    ("  - wait: 5\n    fault: kill\n", "experiment.yaml:3: steps[0]: a step does one thing; this one has wait and "
                                      "fault"),
    ("  - fault: kill\n    duration: 200\n", "experiment.yaml:4: steps[0].duration: a duration of 200s is past"),
])
def test_bad_steps_are_one_line_with_the_file_line_and_field(tmp_path, steps, where):
    with pytest.raises(BadExperiment) as err:
        load_experiment(write(tmp_path, "subject: etcd\nsteps:\n" + steps))
    assert str(err.value).startswith(str(tmp_path / where)), str(err.value)
