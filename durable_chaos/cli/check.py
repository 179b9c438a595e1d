"""`starter.py check`: hold one history file to a data model, alone: no Temporal, no Docker, no run.

The file is JSON lines in Jepsen's shape (safety/jepsen.py, docs/history-format.md), ours or another tool's. The
verdict is the exit code, so a script or CI job can gate on it: 0 valid, 1 violated, 2 bad input, 3 unknown.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import IO, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from durable_chaos.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_PASS,
    err_console,
    fail,
)
from durable_chaos.cli.render import safety_panel
from durable_chaos.cli.reports import check_html
from durable_chaos.safety.availability import moment
from durable_chaos.safety.checkers import CHECKERS, HISTORY_MODELS, HistoryModel
from durable_chaos.safety.checkers import check as check_history
from durable_chaos.safety.history import (
    CHECKED_AS,
    PART_SUFFIX,
    CheckedAs,
    cut_off_attempts,
    parts,
    read_checked_as,
    read_history,
    size_bytes,
)
from durable_chaos.safety.jepsen import BadHistory, History, parse
from durable_chaos.safety.linearizability import SEARCH_BUDGET
from durable_chaos.safety.list_append import DEFAULT_ISOLATION, FORBIDDEN

EXIT_UNKNOWN = 3  # the checkers could not decide (e.g. the search budget was spent): never a guess
EXIT_FOR_SAFETY = {"ok": EXIT_PASS, "violated": EXIT_FAIL, "unknown": EXIT_UNKNOWN}
# The models a history can be checked against: those whose lines can be read and whose checkers exist.
MODELS = [m for m in HISTORY_MODELS if m in CHECKERS]
ISOLATION_LEVELS = tuple(FORBIDDEN)
# A history without times has its line order as its clock, one nanosecond a line, which a report's timestamps
# (microseconds) cannot tell apart: such a history is drawn one millisecond a line.
UNTIMED_TICK = 1_000_000


class _Lines:
    """A file's lines as the parser reads them, noting whether any carries a time."""

    def __init__(self, f: IO[str]):
        self.f, self.timed, self.number = f, False, 0

    def __iter__(self) -> Iterator[str]:
        for self.number, line in enumerate(self.f, start=1):
            self.timed = self.timed or '"time"' in line
            yield line


def _parse(name: str, f: IO[str], spec: HistoryModel) -> tuple[History, bool]:
    lines = _Lines(f)
    try:
        history = parse(lines, spec.fs, spec.shape_error)
    except BadHistory as err:
        fail(EXIT_BAD_INPUT, f"{name}: {err}")
    except UnicodeDecodeError:
        fail(EXIT_BAD_INPUT, f"{name}: line {lines.number + 1}: not UTF-8 text")
    if not lines.timed:
        for op in history.ops:
            op.invoke_ns, op.complete_ns = op.invoke_ns * UNTIMED_TICK, op.complete_ns * UNTIMED_TICK
        for w in history.faults:
            w.start_ns, w.end_ns = w.start_ns * UNTIMED_TICK, w.end_ns and w.end_ns * UNTIMED_TICK
    return history, lines.timed


def _read_file(path: Path, spec: HistoryModel) -> tuple[History, bool]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(
                path, encoding="utf-8") as f:
            return _parse(str(path), f, spec)
    except FileNotFoundError:
        fail(EXIT_BAD_INPUT, f"{path}: no such file")
    except (gzip.BadGzipFile, EOFError) as err:
        fail(EXIT_BAD_INPUT, f"{path}: not a whole gzip file ({err})")
    except OSError as err:
        fail(EXIT_BAD_INPUT, f"{path}: {err.strerror or err}")


def _checked_as(file: str) -> CheckedAs | None:
    """How a run's history folder was checked by its run (None for a file, or a folder with no record)."""
    if file == "-" or not Path(file).is_dir():
        return None
    try:
        return read_checked_as(Path(file))
    except ValueError as err:
        fail(EXIT_BAD_INPUT, str(err))


def _how(c: CheckedAs) -> str:
    said = [f"model {c.model}"]
    said += [f"isolation {c.isolation}"] if c.isolation else []
    said += [f"{c.token_name}s {'gapless' if c.gapless else 'in order'}"] if c.token_name else []
    said += ["a stream that keeps what it delivered"] if c.keeps_delivered else []
    return ", ".join(said)


def read(file: str, spec: HistoryModel) -> tuple[History, bool]:
    """A history file, stdin (`-`), or a run's history folder: its parts, each a history of its own (history.py).
    And whether its lines carry times."""
    if file == "-":
        return _parse("stdin", sys.stdin, spec)
    path = Path(file)
    if not path.is_dir():
        return _read_file(path, spec)
    if not parts(path):
        fail(EXIT_BAD_INPUT, f"{path}: a folder with no history parts (*{PART_SUFFIX}) in it")
    return read_history(path, lambda part: _read_file(part, spec)[0]), True  # ours: timed


HELP = """Check an operation history against a data model: prints the verdict, each check and any
counterexample. Needs no Temporal and no Docker.

\b
FILE holds JSON lines in Jepsen's shape (ours, or another tool's: Jepsen, Knossos, Porcupine converters):
  {"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": [1, 4], "time": 123456789}
  {"process": 3, "type": "ok",     "f": "cas", "key": "k1", "value": [1, 4], "time": 124000000}
type: invoke, then ok / fail (did not happen) / info (unknown) of the same process. f and value by model:
  register      read (value read), write (value written)
  cas-register  read, write, cas [expected, new]
  queue         publish {"id", "publisher", "n"}, fetch [[id, seq], ...], drain {"replica", "messages"}
  list-append   txn [["append", key, 5], ["r", key, [1, 5]], ...]
key is optional (one register); time (ns, any growing clock) is optional (line order); ":read"-style keywords
are read as names. "process": "nemesis" lines mark faults (f start/stop). Every field: docs/history-format.md.

\b
FILE may be .jsonl, .jsonl.gz, `-` (stdin), or a run's history folder (the path its report names), which
is checked as its run checked it (its checked-as.json: the model and the rest) unless flags say otherwise.
Exit codes: 0 valid, 1 violated, 2 bad input (one line naming the file, line and field), 3 unknown
(e.g. the search budget was spent)."""


def check(
    file: str = typer.Argument(..., metavar="FILE", show_default=False,
                               help="the history: .jsonl, .jsonl.gz, a run's history folder, or - for stdin"),
    model: Optional[str] = typer.Option(None, "--model", metavar="MODEL",
                                        help=f"the data model: {', '.join(MODELS)} (default for a run's history "
                                             f"folder: the one its run checked it against)"),
    isolation: Optional[str] = typer.Option(None, "--isolation", metavar="LEVEL",
                                            help=f"list-append: the isolation level the system promises "
                                                 f"({', '.join(ISOLATION_LEVELS)}; default {DEFAULT_ISOLATION}, "
                                                 f"as Elle's)"),
    keeps_delivered: bool = typer.Option(False, "--keeps-delivered",
                                         help="queue: the stream keeps what it delivered (a log, such as JetStream's "
                                              "default retention, as a nats run is checked): a message no replica "
                                              "holds at the end is lost even if it was delivered"),
    html_out: Optional[Path] = typer.Option(None, "--html", metavar="OUT.html",
                                            help="also write a page with the counterexample drawn"),
    as_json: bool = typer.Option(False, "--json", help="print the safety report as JSON instead"),
    budget: int = typer.Option(SEARCH_BUDGET, "--budget", metavar="STEPS", min=1,
                               help="search steps per key before the linearizability search gives up (exit 3)"),
) -> None:
    recorded = _checked_as(file)
    if model is None:
        if recorded is None or recorded.model is None:
            fail(EXIT_BAD_INPUT, f"--model is needed: {file} does not say which data model it holds "
                                 f"({', '.join(MODELS)})")
        model = recorded.model
    if model not in MODELS:
        fail(EXIT_BAD_INPUT, f"--model: {model!r} is not one of {', '.join(MODELS)}")
    # A run's folder is judged as its run judged it, unless a flag says otherwise (or another model is asked for).
    as_run = recorded if recorded is not None and recorded.model == model else CheckedAs(model)
    isolation = isolation or as_run.isolation
    keeps_delivered = keeps_delivered or as_run.keeps_delivered
    if isolation is not None and isolation not in ISOLATION_LEVELS:
        fail(EXIT_BAD_INPUT, f"--isolation: {isolation!r} is not one of {', '.join(ISOLATION_LEVELS)}")
    history, timed = read(file, HISTORY_MODELS[model])
    # A run's folder knows its own gaps: a window attempt that began sending and left no part (history.py
    # mark_sending) may have changed what later reads saw.
    cut_off = cut_off_attempts(Path(file)) if file != "-" and Path(file).is_dir() else []
    unknown_because = [f"{len(cut_off)} load window attempt(s) began sending and left no part "
                       f"({', '.join(cut_off[:3])}{', ...' if len(cut_off) > 3 else ''}): their operations may have "
                       f"landed and are not in the history"] if cut_off else None
    # The faults the history marks (nemesis lines) split its latency into before, during and after.
    starts = [w.start_ns for w in history.faults]
    ends = [w.end_ns for w in history.faults]
    report = check_history(history.ops, model=model, isolation=isolation, keeps_delivered=keeps_delivered,
                           token_name=as_run.token_name, gapless=as_run.gapless,
                           fault_start_ns=min(starts, default=None),
                           fault_end_ns=None if None in ends else max(ends, default=None), budget=budget,
                           unknown_because=unknown_because)
    if file != "-":
        path = Path(file)
        report.history, report.history_bytes = file, size_bytes(path) if path.is_dir() else path.stat().st_size
    notes = []
    if as_run is recorded:
        notes.append(f"checked as its run checked it ({Path(file) / CHECKED_AS}): {_how(as_run)}")
    if not timed:  # latencies and gaps of a clock that counts lines mean nothing
        report.availability = None
        notes.append("the history has no times: its line order is its clock (drawn one millisecond a line)")
    for note in notes:
        err_console.print(f"[dim]{escape(note)}[/]", highlight=False, soft_wrap=True)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        Console().print(safety_panel(report))
    if html_out is not None:
        faults = [(moment(w.start_ns), None if w.end_ns is None else moment(w.end_ns), w.label)
                  for w in history.faults]
        html_out.write_text(check_html("stdin" if file == "-" else file, report, faults, notes))
        err_console.print(f"[dim]page written to {escape(str(html_out))}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_FOR_SAFETY[report.verdict])


check.__doc__ = HELP
