"""The command line starts at once: help, and the commands that only read (list, status, report, check), import
neither Claude's client, nor the worker, nor the plotting library. Those load when a run or a report needs them
(the benchmark times `starter.py --help`: bench/cli_start.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
