"""`starter.py check` as a user runs it (a subprocess): hand-written histories in, a verdict and an exit code out.

Exit codes: 0 valid, 1 violated, 2 bad input (one line naming the file, the line and the field), 3 unknown.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from durable_chaos.safety.history import CheckedAs, Op, mark_sending, write_checked_as, write_part
from durable_chaos.safety.jepsen import FaultWindow
from tests.conftest import ROOT

SVG = "{http://www.w3.org/2000/svg}"
MS = 1_000_000


def check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python starter.py check ARGS`, as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "starter.py"), "check", *args], input=stdin,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60, cwd=ROOT)


def history_file(path: Path, *events: dict | str) -> Path:
    """A history as JSON lines (a str is written as it is: a broken line)."""
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return path


def op(process, f, t_invoke, t_done, value=None, kind="ok", key="k", **extra) -> list[dict]:
    """An operation's invoke and completion lines; times in milliseconds. `value`: a read's result, or what the
    others asked."""
    invoke = {"process": process, "type": "invoke", "f": f, "key": key, "value": None if f == "read" else value,
              "time": t_invoke * MS}
    return [invoke, {**invoke, "type": kind, "time": t_done * MS, "value": value, **extra}]


def valid(tmp_path) -> Path:
    """Two writes and reads that see them, then the final read."""
    return history_file(tmp_path / "valid.jsonl", *op(0, "write", 0, 2, "a"), *op(1, "read", 3, 4, "a"),
                        *op(0, "write", 5, 7, "b"), *op(1, "read", 8, 9, "b"),
                        *op(1, "read", 100, 101, "b", final=True))


def stale(tmp_path) -> Path:
    """b is acknowledged before the read begins, and the read still returns a; a fault window around it."""
    return history_file(tmp_path / "stale.jsonl",
                        *op(0, "write", 0, 2, "a"),
                        {"process": "nemesis", "type": "info", "f": "start", "value": "partition n1", "time": 4 * MS},
                        *op(2, "write", 5, 7, "b"),
                        *op(1, "read", 10, 12, "a"),
                        {"process": "nemesis", "type": "info", "f": "stop", "value": "partition n1", "time": 20 * MS},
                        *op(1, "read", 100, 101, "b", final=True))


def test_a_valid_register_history_exits_0(tmp_path):
    done = check("--model", "register", str(valid(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "data safety: ok" in done.stdout and "linearizability: ok" in done.stdout


def test_a_stale_read_exits_1_and_names_the_stuck_operation(tmp_path):
    done = check("--model", "register", str(stale(tmp_path)))
    assert done.returncode == 1, done.stderr
    assert "data safety: violated" in done.stdout
    assert re.search(r"stuck here \(no legal order places this\): \S+ read k -> a ok \(process 1", done.stdout)


def test_a_history_whose_final_read_failed_is_unknown_exit_3(tmp_path):
    path = history_file(tmp_path / "h.jsonl", *op(0, "write", 0, 2, "a"),
                        *op(1, "read", 100, 5100, kind="info", final=True, error="timeout"))
    done = check("--model", "register", str(path))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "data safety: unknown" in done.stdout and "final read failed" in done.stdout


def test_a_search_that_spends_its_budget_is_unknown_exit_3(tmp_path):
    # Swaps need the search; twelve concurrent ones and two reads give it orders to try.
    events = [e for i in range(12) for e in op(i, "cas", 0, 100, [None if i == 0 else f"v{i - 1}", f"v{i}"])]
    events += op(20, "read", 101, 102, "v11")
    path = history_file(tmp_path / "h.jsonl", *events)
    assert check("--model", "cas-register", str(path)).returncode == 0
    done = check("--model", "cas-register", "--budget", "5", str(path))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "budget (5 steps) exhausted" in done.stdout


def test_json_output_is_the_safety_report(tmp_path):
    done = check("--model", "register", "--json", str(stale(tmp_path)))
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["verdict"] == "violated" and report["model"] == "register"
    cx = report["counterexample"]
    assert cx["ops"][cx["stuck"]]["kind"] == "read" and cx["ops"][cx["stuck"]]["value"] == "a"


# -- bad input: exit 2, one line naming the file, the line and the field -------------------------------------------


@pytest.mark.parametrize("model, lines, where", [
    ("register", [*op(0, "write", 0, 1, "a")[:1], '{"process": 0, "type": "ok", "f": "write", "value": "a"'],
     "line 2: json: not JSON"),
    ("register", op(0, "cas", 0, 1, [1, 2]), "line 1: f: 'cas' is not an operation of this model"),
    ("register", op(0, "write", 0, 1, "a")[1:], "line 1: type: a completion (ok) of process 0 with no invoke"),
    ("cas-register", op(0, "write", 0, 1, "a") + op(0, "cas", 2, 3, [1]), "line 3: value: a cas's value must be"),
    ("register", [{"process": 0, "type": "begin", "f": "read"}], "line 1: type: 'begin' is not one of"),
])
def test_bad_input_names_the_file_the_line_and_the_field(tmp_path, model, lines, where):
    path = history_file(tmp_path / "bad.jsonl", *lines)
    done = check("--model", model, str(path))
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1 and f"error: {path}: {where}" in done.stderr, done.stderr


def test_a_missing_file_is_bad_input(tmp_path):
    done = check("--model", "register", str(tmp_path / "nowhere.jsonl"))
    assert done.returncode == 2 and done.stderr.strip() == f"error: {tmp_path / 'nowhere.jsonl'}: no such file"


def test_an_unknown_model_is_bad_input(tmp_path):
    done = check("--model", "graph", str(valid(tmp_path)))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--model: 'graph' is not one of" in done.stderr


# -- where a history comes from ------------------------------------------------------------------------------------


def test_gzip_stdin_and_a_runs_history_folder(tmp_path):
    plain = stale(tmp_path)
    packed = tmp_path / "stale.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert check("--model", "register", str(packed)).returncode == 1
    assert check("--model", "register", "-", stdin=plain.read_text()).returncode == 1
    # A run's folder: a load window's part and the final part (with the fault window), as a run writes them.
    folder = tmp_path / "run"
    folder.mkdir()
    ops = [Op("write", "ok", 0, 2 * MS, "k", "a"), Op("write", "ok", 5 * MS, 7 * MS, "k", "b", process=1),
           Op("read", "ok", 10 * MS, 12 * MS, "k", "a", process=2)]
    write_part(folder / "1000.jsonl.gz", ops)
    write_part(folder / "final.jsonl.gz", [Op("read", "ok", 99 * MS, 100 * MS, "k", "b", final=True)],
               [FaultWindow(4 * MS, 20 * MS, "kill n1")])
    done = check("--model", "register", str(folder))
    assert done.returncode == 1 and "stuck here" in done.stdout, done.stdout + done.stderr


def test_a_runs_folder_with_an_attempt_cut_off_while_sending_is_unknown_exit_3(tmp_path):
    # The read of a sees it after b was acknowledged: violated, unless writes are missing from the history. An
    # attempt that began sending and left no part may have written a again.
    folder = tmp_path / "run"
    folder.mkdir()
    ops = [Op("write", "ok", 0, 2 * MS, "k", "a"), Op("write", "ok", 5 * MS, 7 * MS, "k", "b", process=1),
           Op("read", "ok", 10 * MS, 12 * MS, "k", "a", process=2)]
    write_part(folder / "1000-1.jsonl.gz", ops)
    mark_sending(folder / "1000-1.jsonl.gz")
    write_part(folder / "final.jsonl.gz", [Op("read", "ok", 99 * MS, 100 * MS, "k", "b", final=True)])
    assert check("--model", "register", str(folder)).returncode == 1
    mark_sending(folder / "3000-2.jsonl.gz")  # began sending, left no part
    done = check("--model", "register", str(folder))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "data safety: unknown" in done.stdout and "3000-2" in done.stdout


def test_a_log_that_lost_a_delivered_message_fails_only_with_keeps_delivered(tmp_path):
    """A queue history whose consumer got m1 and m2, while at the end no replica holds m2: a work queue may forget
    what it delivered (exit 0), a log (JetStream's default retention, as a nats run is checked) may not (exit 1)."""
    def lines(f, t0, t1, value, **extra):
        invoke = {"process": 0, "type": "invoke", "f": f, "value": value, "time": t0 * MS}
        return [invoke, {**invoke, "type": "ok", "time": t1 * MS, **extra}]
    history = history_file(
        tmp_path / "log.jsonl",
        *lines("publish", 0, 1, {"id": "m1", "publisher": 0, "n": 1}, token=1),
        *lines("publish", 2, 3, {"id": "m2", "publisher": 0, "n": 2}, token=2),
        *lines("fetch", 4, 5, [["m1", 1], ["m2", 2]]),
        *lines("drain", 9, 10, {"replica": "n1", "messages": [["m1", 1]]}, final=True))
    assert check("--model", "queue", str(history)).returncode == 0
    done = check("--model", "queue", "--keeps-delivered", str(history))
    assert done.returncode == 1 and "was delivered, yet no replica holds it" in done.stdout, done.stdout + done.stderr
    assert "--keeps-delivered" in check("--help").stdout


def test_a_runs_folder_is_checked_as_its_run_checked_it_without_flags(tmp_path):
    """A run writes how it checked its history (checked-as.json) beside the parts: `check FOLDER` needs no --model,
    and a log's folder is judged as a log (the loss `--keeps-delivered` finds, above) without the flag."""
    folder = tmp_path / "run"
    folder.mkdir()
    publish = [Op("publish", "ok", t * MS, (t + 1) * MS, None, {"id": f"m{n}", "publisher": 0, "n": n}, token=n)
               for n, t in ((1, 0), (2, 2))]
    write_part(folder / "1000.jsonl.gz", [*publish, Op("fetch", "ok", 4 * MS, 5 * MS, None, [["m1", 1], ["m2", 2]])])
    write_part(folder / "final.jsonl.gz", [Op("drain", "ok", 9 * MS, 10 * MS, None,
                                              {"replica": "n1", "messages": [["m1", 1]]}, final=True)])
    assert check(str(folder)).returncode == 2  # no record: which model it holds is not known
    write_checked_as(folder, CheckedAs(model="queue", keeps_delivered=True))
    done = check(str(folder))
    assert done.returncode == 1 and "was delivered, yet no replica holds it" in done.stdout, done.stdout + done.stderr
    assert "checked as its run checked it" in done.stderr and "keeps what it delivered" in done.stderr
    # A broken record is bad input, in one line.
    (folder / "checked-as.json").write_text("{")
    broken = check(str(folder))
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "checked-as.json" in broken.stderr


def test_a_folder_with_a_broken_part_names_the_part(tmp_path):
    (tmp_path / "1000.jsonl.gz").write_bytes(gzip.compress(b'{"process": 0, "type": "ok", "f": "read"}\n'))
    done = check("--model", "register", str(tmp_path))
    assert done.returncode == 2 and f"{tmp_path / '1000.jsonl.gz'}: line 1: type:" in done.stderr


# Knossos' and Porcupine's register histories, as Jepsen writes them: integer processes and values, keywords kept
# from EDN (":invoke", ":read"), a nemesis, no key (one register) and no time (the line order is the clock).
JEPSEN_STALE = """\
{"process": 0, "type": ":invoke", "f": ":write", "value": 1}
{"process": 0, "type": ":ok", "f": ":write", "value": 1}
{"process": ":nemesis", "type": ":info", "f": ":start-partition", "value": "majorities-ring"}
{"process": 1, "type": ":invoke", "f": ":write", "value": 2}
{"process": 1, "type": ":ok", "f": ":write", "value": 2}
{"process": 2, "type": ":invoke", "f": ":read", "value": null}
{"process": 3, "type": ":invoke", "f": ":write", "value": 3}
{"process": 2, "type": ":ok", "f": ":read", "value": 1}
{"process": ":nemesis", "type": ":info", "f": ":stop-partition", "value": null}
{"process": 3, "type": ":info", "f": ":write", "value": 3}
"""


def test_a_jepsen_history_with_a_stale_read(tmp_path):
    path = tmp_path / "knossos.jsonl"
    path.write_text(JEPSEN_STALE)
    page = tmp_path / "page.html"
    done = check("--model", "cas-register", "--html", str(page), str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"stuck here \(no legal order places this\): \S+ read -> 1 ok \(process 2", done.stdout)
    svg = _svg(page.read_text())
    assert svg.find(f".//{SVG}g[@id='counterexample-fault-1']") is not None  # the nemesis' partition, shaded


def test_a_valid_jepsen_history_is_valid(tmp_path):
    path = tmp_path / "knossos.jsonl"
    path.write_text(JEPSEN_STALE.replace('"f": ":read", "value": 1}', '"f": ":read", "value": 2}'))
    done = check("--model", "cas-register", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# -- the page ------------------------------------------------------------------------------------------------------


def _svg(page: str) -> ET.Element:
    start = page.index('<svg id="counterexample"')
    return ET.fromstring(page[start:page.index("</svg>", start) + 6])


def test_the_html_page_draws_one_row_per_process_and_shades_the_fault(tmp_path):
    page = tmp_path / "page.html"
    done = check("--model", "register", "--html", str(page), str(stale(tmp_path)))
    assert done.returncode == 1
    svg = _svg(page.read_text())
    bars = {int(g.get("id").rsplit("-", 1)[1]): g for g in svg.iter(f"{SVG}g")
            if re.fullmatch(r"counterexample-op-\d+", g.get("id", ""))}
    # Each bar's vertical middle is its process's row: the writes of processes 0 and 2, the stale read of 1.
    rows = {i: _middle_y(g) for i, g in bars.items()}
    assert len(bars) == 3 and len(set(rows.values())) == 3
    assert svg.find(f".//{SVG}g[@id='counterexample-fault-1']") is not None
    assert svg.find(f".//{SVG}g[@id='counterexample-stuck']") is not None
    assert "stuck at read k -> a: no legal order places this" in svg.find(f"{SVG}title").text


def _middle_y(bar: ET.Element) -> float:
    ys = [float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", bar.find(f".//{SVG}path").get("d"))]
    return round((min(ys) + max(ys)) / 2, 1)


def test_check_help_points_at_the_format_and_is_listed(tmp_path):
    done = check("--help")
    assert done.returncode == 0 and "docs/history-format.md" in done.stdout and "Exit codes: 0 valid" in done.stdout
    listing = subprocess.run([sys.executable, str(ROOT / "starter.py"), "--help"], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
    assert re.search(r"^\s+check\s", listing.stdout, re.M)
