"""The command line starts at once: help, and the commands that only read (list, status, report, check), import
neither Claude's client, nor the worker, nor the plotting library. Those load when a run or a report needs them
(the benchmark times `starter.py --help`: bench/startup.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer._click.utils import make_default_short_help

from durable_chaos.cli.app import COMMANDS, load_command
from tests.conftest import ROOT

HEAVY = ("anthropic", "temporalio.worker", "matplotlib")


def imported_by(*args: str) -> set[str]:
    """Every module `python starter.py ARGS` imported, from the interpreter's own import log (the command ends
    with os._exit, so nothing can ask it afterwards)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "starter.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("--help",), ("list", "--help"), ("status", "--help"), ("report", "--help"),
                                  ("check", "--help"), ("chaos", "--help")], ids=" ".join)
def test_help_imports_no_worker_no_claude_client_no_plotting(args):
    loaded = imported_by(*args)
    assert not [m for m in HEAVY if m in loaded], f"starter.py {' '.join(args)} imported {HEAVY}"


def test_help_alone_imports_no_command():
    """`starter.py --help` lists the commands from cli/app.py's table: it imported every command's module (Temporal's
    client, the contracts, the subjects) and took 0.7 s."""
    loaded = imported_by("--help")
    assert not [m for m in loaded if m.startswith(("temporalio", "durable_chaos.contracts", "subjects", "pydantic"))]
    assert not [m for m in loaded if m.startswith("durable_chaos.cli.") and m not in ("durable_chaos.cli.app",
                                                                                    "durable_chaos.cli.errors")]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_help_listed_for_a_command_is_its_own(name):
    """What `--help` lists for each command (from the table) is what the command says of itself."""
    own = load_command(name).get_short_help_str(limit=10_000)
    assert make_default_short_help(COMMANDS[name][2], 10_000) == own


def test_check_holds_a_history_without_temporal(tmp_path):
    """`check` reads one file and needs no server: neither its help nor a check loads Temporal's client (0.18 s of
    the 0.49 s `check --help` took). The contracts it reads the report with still import the SDK's common types."""
    history = tmp_path / "h.jsonl"
    history.write_text('{"type": "invoke", "f": "write", "value": 1, "process": 0, "time": 1}\n'
                       '{"type": "ok", "f": "write", "value": 1, "process": 0, "time": 2}\n'
                       '{"type": "invoke", "f": "read", "value": null, "process": 1, "time": 3}\n'
                       '{"type": "ok", "f": "read", "value": 1, "process": 1, "time": 4}\n')
    for args in (("check", "--help"), ("check", str(history), "--model", "register")):
        loaded = imported_by(*args)
        assert not [m for m in loaded if m.startswith(("temporalio.client", "temporalio.worker"))], args
