"""Counterexample pages as a person opens them, in headless Chromium; the screenshots are kept
(artifacts/counterexample-timeline.png, artifacts/counterexample-cycle.png). Neither Docker nor Temporal: a stale
read in a run's history folder goes through `starter.py check --html`, and a G-single cycle is drawn from a
counterexample built by hand."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

from durable_chaos.cli.reports import check_html
from durable_chaos.contracts import Counterexample, CycleEdge, OpView, SafetyCheck, SafetyReport
from durable_chaos.safety.history import Op, write_part
from durable_chaos.safety.jepsen import FaultWindow
from tests.conftest import ARTIFACTS, ROOT
from tests.integration.test_operations import browser_page, isolated_chromium  # noqa: F401 (a fixture)

T0 = datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)
MS = 1_000_000


def at(ms: float) -> int:
    return int(T0.timestamp() * 1e9) + int(ms * MS)


def stale_read_run(folder) -> None:
    """A partition isolates etcd1; process 1, served by it, reads k03's old value after process 2's newer write
    was acknowledged; process 3's write times out (info), and the final read shows it landed."""
    def op(kind, value, start, end, process, outcome="ok", **extra):
        return Op(kind, outcome, at(start), at(end), "k03", value, process=process, **extra)

    window = [op("write", "v11", 0, 3, 0), op("read", "v11", 20, 22, 1), op("write", "v12", 150, 180, 2),
              op("write", "v13", 160, 2160, 3, "info", error="context deadline exceeded"),
              op("read", "v11", 300, 302, 1), op("read", "v12", 400, 403, 0)]
    write_part(folder / f"{at(0)}.jsonl.gz", window)
    write_part(folder / "final.jsonl.gz", [op("read", "v13", 9000, 9002, 0, final=True)],
               [FaultWindow(at(100), at(5000), "partition etcd1 from the others")])


async def test_a_stale_read_drawn_as_a_timeline(tmp_path, isolated_chromium):  # noqa: F811
    folder = tmp_path / "history"
    folder.mkdir()
    stale_read_run(folder)
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "counterexample-timeline.html"
    done = subprocess.run([sys.executable, str(ROOT / "starter.py"), "check", "--model", "register", "--html",
                           str(page), str(folder)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    async with browser_page(isolated_chromium, ARTIFACTS / "counterexample-timeline.png") as browser:
        await browser.goto(page.as_uri())
        await browser.locator("#counterexample").wait_for()
        rows = await browser.locator("#counterexample g[id^='counterexample-op-']:not([id$='-later'])").count()
        shaded = await browser.locator("#counterexample-fault-1").count()
    assert (rows, shaded) == (4, 1)  # v11, v12, v13 (info), the stale read


def g_single() -> SafetyReport:
    """Three transactions in a cycle with one anti-dependency: T3 read x before T1's append, yet T1 comes before
    T2 (T2 read it) and T2 before T3 (T3's append to y follows T2's)."""
    def txn(micro, start, end, process):
        return OpView(kind="txn", value=micro, outcome="ok", invoked_at=T0 + timedelta(milliseconds=start),
                      completed_at=T0 + timedelta(milliseconds=end), latency_ms=end - start, process=process)

    cx = Counterexample(
        checker="list-append", anomaly="G-single",
        summary="T3 did not see T1's append to x, yet T1 precedes T2 (T2 read it) and T2 precedes T3 (T3 appended "
                "to y after T2): a cycle with one anti-dependency, which snapshot isolation forbids",
        ops=[txn([["append", "x", 1]], 0, 8, 0), txn([["r", "x", [1]], ["append", "y", 2]], 10, 15, 1),
             txn([["r", "x", []], ["append", "y", 3]], 12, 30, 2)],
        cycle=[CycleEdge(source=0, target=1, kind="wr", why="T2 read x = [1], which holds T1's append of 1"),
               CycleEdge(source=1, target=2, kind="ww", why="T3 appended 3 to y after T2 appended 2 (y was later "
                                                           "read as [2 3])"),
               CycleEdge(source=2, target=0, kind="rw", why="T3 read x = [], without T1's append of 1: T3 read x "
                                                           "before T1 wrote it")])
    return SafetyReport(verdict="violated", model="list-append", ops=3, acked_writes=3, keys=2, counterexample=cx,
                        checks=[SafetyCheck(name="list-append", verdict="violated",
                                            detail="1 cycle: G-single (T1 → T2 → T3 → T1)")])


async def test_a_g_single_cycle_drawn_as_a_cycle(isolated_chromium):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "counterexample-cycle.html"
    page.write_text(check_html("postgres history", g_single(), []))
    async with browser_page(isolated_chromium, ARTIFACTS / "counterexample-cycle.png") as browser:
        await browser.goto(page.as_uri())
        await browser.locator("#counterexample-cycle").wait_for()
        edges = await browser.locator("#counterexample-cycle g[id^='cycle-edge-']").count()
    assert edges == 3
