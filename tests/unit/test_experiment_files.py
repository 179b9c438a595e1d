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
    assert any(line.startswith("step 1: ") and "could hit" in line for line in lines), result.output
    assert any("undo: at the latest" in line for line in lines), result.output
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
