"""Workflow code reads no clock, no randomness and no outside world of its own: it asks `workflow.now()`,
`workflow.random()` and activities; and it keeps no module state, which every run on a worker would share. The
worker runs workflow code without Temporal's sandbox (runtime/worker.py says why), so nothing stops such a call at
run time; this test does, on the source, and the replay tests (tests/workflow/test_replay.py) check what the code
does with recorded histories."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

WORKFLOW_FILES = sorted((ROOT / "workflows").rglob("*.py"))
# module -> names whose use in workflow code would differ between a run and its replay
FORBIDDEN = {
    "time": {"time", "monotonic", "perf_counter", "sleep", "time_ns", "monotonic_ns"},
    "datetime": {"now", "utcnow", "today"},
    "random": {"random", "randint", "choice", "choices", "shuffle", "sample", "uniform", "randrange"},
    "uuid": {"uuid1", "uuid4"},
    "os": {"environ", "getenv", "urandom", "listdir", "getpid"},
    "secrets": {"token_hex", "token_bytes", "choice"},
}
FORBIDDEN_BUILTINS = {"open", "input"}
FORBIDDEN_IMPORTS = {"socket", "subprocess", "threading", "requests", "httpx", "aiohttp", "python_on_whales"}


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in set().union(*FORBIDDEN.values()):
            # `datetime.now()`, `time.time()`, `random.choice(...)`, `datetime.datetime.now()`; not `workflow.now()`
            base = node.value
            names = {base.id} if isinstance(base, ast.Name) else {base.attr} if isinstance(base, ast.Attribute) else set()
            if any(node.attr in FORBIDDEN.get(n, ()) for n in names):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_BUILTINS:
            found.append(f"{where}:{node.lineno}: {node.func.id}()")
        elif isinstance(node, ast.Global):  # module state: one run's change would be the next run's start
            found.append(f"{where}:{node.lineno}: global {', '.join(node.names)}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}:{node.lineno}: import {m}" for m in modules
                      if m.split(".")[0] in FORBIDDEN_IMPORTS]
    return found


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflow_code_calls_no_clock_randomness_or_io(path):
    assert findings(path) == []


def test_the_check_finds_what_it_is_for(tmp_path):
    bad = tmp_path / "workflow.py"
    bad.write_text("import datetime, time, random, subprocess\n"
                   "def f():\n    return datetime.datetime.now(), time.time(), random.choice([1]), open('x')\n"
                   "def g():\n    global SEEN\n")
    assert len(findings(bad)) == 6, findings(bad)
