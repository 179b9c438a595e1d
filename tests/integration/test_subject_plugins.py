"""Subjects as plugins: a user's subject folder, discovery by entry point and search path, and bad subject files.

Bad input is checked through the CLI as a user meets it: exit 2, one line naming the file and the field, and
nothing started (no container of the project exists afterwards).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from durable_chaos.contracts import ChaosInput, ErrorType, SubjectRef
from subjects.declarative import schema
from tests.conftest import ROOT, command_env, running_worker, starter
from workflows.chaos import ChaosDemoWorkflow

EXAMPLE = ROOT / "tests" / "data" / "my-subject"


def _containers_of(project: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def _broken_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "subject"
    shutil.copytree(EXAMPLE, folder)
    edit(folder)
    return folder


def _replace(folder: Path, old: str, new: str) -> None:
    f = folder / "subject.yaml"
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: (f / "docker-compose.yaml").unlink(), r"subject: no docker-compose\.yaml"),
        (lambda f: (f / "subject.yaml").write_text("name: redis\nservices: [redis1\n"),
         r"subject\.yaml: YAML error at line 3, column 1: expected ','"),
        (lambda f: _replace(f, "kind: exec", "kind: grpc"),
         r"subject\.yaml: probes\.2: unknown kind 'grpc' \(kinds: http, tcp, exec\)"),
        (lambda f: _replace(f, "load_on: primary", "load_onn: primary"), r"subject\.yaml: load_onn: unknown field"),
        (lambda f: _replace(f, "send: \"PING\\r\\n\"", "sendd: x"), r"subject\.yaml: probes\.0\.sendd: unknown field"),
        (lambda f: _replace(f, "load_on: primary", "load_on: leader"),
         r"subject\.yaml: top level: Value error, load_on 'leader' is not one of roles"),
    ],
    ids=["no-compose-file", "yaml-error", "unknown-probe-kind", "unknown-field", "unknown-probe-field", "bad-role"],
)
def test_a_bad_subject_folder_exits_2_with_one_line_naming_file_and_field(tmp_path, edit, message):
    folder = _broken_copy(tmp_path, edit)
    project = f"t-{uuid.uuid4().hex[:8]}"
    env = command_env("127.0.0.1:1", tmp_path)  # never reached: the subject is refused first
    proc = starter("chaos", "--subject", str(folder), "--project", project, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(folder) in lines[0] and re.search(message, lines[0]), lines[0]
    assert _containers_of(project) == []


def test_the_guide_is_the_tested_example_word_for_word():
    """The guide's files (docs/subjects.md), copied and pasted, are the ones the end-to-end test below runs."""
    guide = (ROOT / "docs" / "subjects.md").read_text()
    for name in ("subject.yaml", "docker-compose.yaml"):
        block = re.search(rf"```yaml\n# my-subject/{re.escape(name)}\n(.*?)```", guide, re.S)
        assert block, f"docs/subjects.md has no block for my-subject/{name}"
        assert block.group(1) == (EXAMPLE / name).read_text(), f"the guide's my-subject/{name} differs from {EXAMPLE}"


def test_the_published_json_schema_is_current():
    published = json.loads((ROOT / "subjects" / "subject.schema.json").read_text())
    assert published == schema(), "run: python starter.py subjects --schema > subjects/subject.schema.json"
    out = starter("subjects", "--schema", env=command_env("127.0.0.1:1", ROOT))
    assert out.returncode == 0 and json.loads(out.stdout) == published


def test_subjects_lists_shipped_installed_and_search_path_subjects(tmp_path):
    # A third-party plugin, registered by entry point exactly as the shipped subjects are.
    dist = tmp_path / "site"
    (dist / "mykv_plugin-1.0.dist-info").mkdir(parents=True)
    (dist / "mykv_plugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: mykv-plugin\n"
                                                                  "Version: 1.0\n")
    (dist / "mykv_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[durable_chaos.subjects]\nmykv = mykv_plugin:MyKv\n")
    (dist / "mykv_plugin.py").write_text(
        "from subjects.etcd import Etcd\n\nclass MyKv(Etcd):\n    name = 'mykv'\n    default_project = 'chaos-mykv'\n")
    search = tmp_path / "mine"
    shutil.copytree(EXAMPLE, search / "redis-folder")
    env = command_env("127.0.0.1:1", tmp_path, PYTHONPATH=f"{dist}:{ROOT}", CHAOS_SUBJECT_PATH=str(search))
    out = starter("subjects", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"etcd", "nats", "postgres", "mykv", "redis"} <= set(rows), rows
    assert rows["etcd"]["origin"] == "entry point subjects.etcd:ETCD"
    assert rows["mykv"]["origin"] == "entry point mykv_plugin:MyKv"
    assert rows["redis"]["origin"] == f"folder {search / 'redis-folder'}"
    assert rows["postgres"]["targets"] == ["pg1", "pg2", "pg3"]
    assert set(rows["etcd"]["images"]) == {"chaos-etcd:3.5.16"}
    assert rows["etcd"]["images"]["chaos-etcd:3.5.16"] in (True, False)
    # A folder on the search path is found by its name too.
    bad = starter("chaos", "--subject", "redis", "--target", "redis9", env=env)
    assert bad.returncode == 2 and ("'redis9' is not a target of redis (targets: redis1, redis2, redis3, or random, "
                                    "leader, follower)") in bad.stderr


async def test_a_worker_that_does_not_know_the_subject_rejects_the_run_and_touches_nothing(client, task_queue):
    # The starter knew it (say, a folder on the user's laptop); this worker's machine has no such folder.
    ref = SubjectRef(name="ghost", folder="/nonexistent/ghost", project=f"t-{uuid.uuid4().hex[:8]}")
    async with running_worker(client, task_queue):
        with pytest.raises(WorkflowFailureError) as err:
            await client.execute_workflow(ChaosDemoWorkflow.run, ChaosInput(subject=ref, countdown_s=0),
                                          id=ref.project, task_queue=task_queue)
    cause = err.value.cause
    while getattr(cause, "cause", None) is not None and not getattr(cause, "type", None):
        cause = cause.cause
    assert cause.type == ErrorType.BAD_INPUT
    assert cause.message == "subject 'ghost': folder /nonexistent/ghost does not exist on this worker"
    assert _containers_of(ref.project) == []


def test_a_hook_class_in_the_folder_takes_over_what_the_file_cannot_say(tmp_path):
    folder = _broken_copy(tmp_path, lambda f: (f / "subject.yaml").write_text(
        (f / "subject.yaml").read_text() + "hook: richer:Richer\n"))
    (folder / "richer.py").write_text(
        "from subjects.declarative import DeclarativeSession, DeclarativeSubject\n\n"
        "class RicherSession(DeclarativeSession):\n    pass\n\n"
        "class Richer(DeclarativeSubject):\n    session_class = RicherSession\n    primary_role = 'primary'\n"
        "    targets = ('redis2', 'redis3')  # say, redis1 is off limits\n")
    env = command_env("127.0.0.1:1", tmp_path, CHAOS_SUBJECT_PATH=str(folder))
    rows = {r["name"]: r for r in json.loads(starter("subjects", "--json", env=env).stdout)}
    assert rows["redis"]["targets"] == ["redis2", "redis3"]
    bad = starter("chaos", "--subject", str(folder), "--target", "redis1", env=env)
    assert bad.returncode == 2 and ("'redis1' is not a target of redis (targets: redis2, redis3, or random, leader, "
                                    "follower)") in bad.stderr


def test_a_hook_that_cannot_be_loaded_is_one_line_naming_it(tmp_path):
    folder = _broken_copy(tmp_path, lambda f: (f / "subject.yaml").write_text(
        (f / "subject.yaml").read_text() + "hook: missing_module:Nope\n"))
    proc = starter("chaos", "--subject", str(folder), env=command_env("127.0.0.1:1", tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {folder}/subject.yaml: hook: cannot load missing_module:Nope: "
                                   "No module named 'missing_module'")
