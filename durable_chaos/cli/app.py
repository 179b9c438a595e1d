"""The `starter.py` command line: start chaos runs and follow them.

Exit codes: 0 pass, 1 verdict fail (or the run failed), 2 bad input, 3 infrastructure unreachable (Docker or
Temporal), 4 stop-all could not confirm every fault undone, 130 interrupted. Every error is one line on stderr.

Each command is loaded when it is used: `starter.py --help` lists them from COMMANDS below without importing one,
and `starter.py list` imports the runs module, not the schedules' or Claude's. Importing every command's module took
0.73 s (Temporal's client, the contracts' pydantic models, the subjects, networkx) before a line of help was printed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping

import typer
from typer._click.utils import make_default_short_help

from durable_chaos.cli.errors import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    OneLineErrors,
)

# name -> (module, its command: a function or a Typer app of its own, and the first paragraph of its help, which
# `--help` lists; tests/unit/test_cli_startup.py checks each against the command's own). In the order of `--help`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "chaos": ("durable_chaos.cli.chaos", "app",
              "Run one chaos experiment: preflight, load, countdown, fault, detect, diagnose, restore."),
    "run": ("durable_chaos.cli.experiments", "run",
            ("Run an experiment file: the same run, live view and exit codes as `chaos`, described in a file you "
             "review.")),
    "subjects": ("durable_chaos.cli.subjects", "subjects",
                 ("Every subject you can run: shipped and installed ones (entry points), and subject folders on "
                  "CHAOS_SUBJECT_PATH.")),
    # Checking a history file alone (ours or another tool's): no Temporal, no Docker.
    "check": ("durable_chaos.cli.check", "check",
              ("Check an operation history against a data model: prints the verdict, each check and any "
               "counterexample.")),
    "advance": ("durable_chaos.cli.control", "advance",
                ("Release the stage an interactive run is holding (what Enter does in its own terminal), from "
                 "anywhere.")),
    "cancel": ("durable_chaos.cli.control", "cancel",
               "Cancel a run: its restore still runs, then it ends as cancelled (exit 130)."),
    "abort": ("durable_chaos.cli.control", "abort",
              "Restore now and finish the run with its report (the verdict, as `chaos` ends with)."),
    "reap": ("durable_chaos.cli.control", "reap",
             ("Restore faults left behind by runs that closed without restoring (terminated ones) — now, not on "
              "schedule.")),
    # Operations: finding runs, reading their reports, nightly schedules.
    "list": ("durable_chaos.cli.runs", "list_runs",
             "Recent chaos runs (manual and scheduled) with target, verdict, time to detect/restore and diagnosis."),
    "status": ("durable_chaos.cli.runs", "status",
               "Where a run is now (live stage, load, detection clock) or, once closed, its verdict."),
    "watch": ("durable_chaos.cli.runs", "watch",
              "Follow a running run live (one started with --detach or by a schedule) until its report."),
    "report": ("durable_chaos.cli.runs", "report",
               "A run's report as JSON, Markdown, a self-contained HTML page with the load timeline, or JUnit XML."),
    "workers": ("durable_chaos.cli.hosts", "workers",
                ("The fleet: each Docker host, its workers, its engine, the runs in flight there and when it was "
                 "last seen.")),
    # Guardrails: the emergency stop and the way back.
    "stop-all": ("durable_chaos.cli.emergency", "stop_all",
                 ("Emergency stop: pause every chaos schedule, cancel every running chaos run on the task queue, and "
                  "wait until each has undone its fault.")),
    "resume-schedules": ("durable_chaos.cli.emergency", "resume_schedules",
                         ("Unpause the chaos schedules stop-all paused (recognised by their pause note), or every "
                          "paused one with --all.")),
    "schedule": ("durable_chaos.cli.schedules", "app", "Nightly (or any cron) chaos runs as Temporal Schedules."),
}

# Plain help: Typer's Rich help labels every flag `<bool>` as if it took a value (even --help); Click's plain help
# draws flags as flags.
PLAIN = {"add_completion": False, "pretty_exceptions_enable": False, "rich_markup_mode": None}


def load_command(name: str):
    """The Click command `name` runs, imported now."""
    module, attribute, _ = COMMANDS[name]
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, typer.Typer):
        one = typer.Typer(**PLAIN)
        one.command(name)(found)
        found = one
    command = typer.main.get_command(found)
    command.name = name
    return command


class _OnUse(Mapping):
    """The group's commands, each built the first time it is asked for (its name, for a typo's suggestions, is
    known without)."""

    def __init__(self) -> None:
        self._built: dict = {}

    def __getitem__(self, name: str):
        if name not in COMMANDS:
            raise KeyError(name)
        if name not in self._built:
            self._built[name] = load_command(name)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class CommandLine(OneLineErrors):
    """The top-level group, with its commands loaded on use."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        self.commands = _OnUse()

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx, formatter) -> None:
        # As Click lays them out, from the table: asking each command for its help would import them all.
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        with formatter.section("Commands"):
            formatter.write_dl([(name, make_default_short_help(summary, limit))
                                for name, (_, _, summary) in COMMANDS.items()])


app = typer.Typer(
    cls=CommandLine,
    help="Durable chaos runs on Temporal: kill a node of a real cluster, watch it get detected and diagnosed, "
    "and be certain it comes back.",
    no_args_is_help=True,
    context_settings={"max_content_width": 120},  # Click's help stops at 80 columns even in a wider terminal
    **PLAIN,
)


@app.callback()
def _root() -> None:
    """Durable chaos runs on Temporal. Server: TEMPORAL_ADDRESS / profile, else the embedded dev server."""


def _exit(code: int) -> None:
    """A command that used Temporal's client exits through connect.exit_process (the SDK's threads, its spans: that
    module says why); one that did not (help, check) has neither to wait for."""
    connect = sys.modules.get("durable_chaos.runtime.connect")
    if connect is not None:
        connect.exit_process(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    try:
        app()  # always ends in SystemExit carrying the exit code
    except KeyboardInterrupt:
        _exit(EXIT_INTERRUPTED)
    except SystemExit as done:
        _exit(done.code if isinstance(done.code, int) else EXIT_FAIL if done.code else EXIT_PASS)
