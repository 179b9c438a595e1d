"""The counterexample drawn: a timeline (one row per process, the fault shaded, the stuck op marked) or a
transaction cycle; and in the run's HTML report."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from durable_chaos.cli.counterexample_plot import counterexample_svg
from durable_chaos.cli.render import op_words
from durable_chaos.cli.reports import render
from durable_chaos.contracts import Counterexample, CycleEdge, OpView
from tests.unit.test_safety_report import report

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def view(kind, value, start, end, process, outcome="ok", key="k") -> OpView:
    return OpView(kind=kind, key=key, value=value, outcome=outcome, invoked_at=at(start),
                  completed_at=None if outcome == "info" else at(end), latency_ms=end - start, process=process)


def ids(svg: str, pattern: str) -> list[str]:
    root = ET.fromstring(svg)
    return [g.get("id") for g in root.iter(f"{SVG}g") if re.fullmatch(pattern, g.get("id", ""))]


def test_a_stale_read_as_a_timeline():
    cx = Counterexample(checker="linearizability", summary="stale", stuck=3, ops=[
        view("write", "a", 0, 2, 0), view("write", "c", 3, 5000, 3, outcome="info"), view("write", "b", 5, 7, 2),
        view("read", "a", 10, 12, 1)])
    svg = counterexample_svg(cx, [(at(4), at(20), "partition n1"), (at(-9000), at(-8000), "an earlier fault")])
    assert len(ids(svg, r"counterexample-op-\d")) == 4
    assert ids(svg, r"counterexample-fault-\d") == ["counterexample-fault-1"]  # the earlier one ended before
    assert ids(svg, "counterexample-stuck") == ["counterexample-stuck"]
    title = ET.fromstring(svg).find(f"{SVG}title").text
    assert "4 operations of 4 processes" in title and "stuck at read k -> a: no legal order places this" in title


def test_a_cycle_as_a_cycle():
    cx = Counterexample(checker="list-append", summary="read skew", anomaly="G-single", ops=[
        view("txn", [["append", "x", 1], ["append", "y", 1]], 0, 12, 0, key=None),
        view("txn", [["r", "x", [1]], ["r", "y", []]], 5, 9, 1, key=None)],
        cycle=[CycleEdge(source=0, target=1, kind="wr", why="T2 read T1's append of 1 to x"),
               CycleEdge(source=1, target=0, kind="rw", why="T2 read y without T1's append of 1")])
    svg = counterexample_svg(cx)
    assert ids(svg, r"cycle-edge-\d") == ["cycle-edge-0", "cycle-edge-1"]
    assert sorted(ids(svg, r"cycle-txn-\d")) == ["cycle-txn-0", "cycle-txn-1"]
    assert ET.fromstring(svg).find(f"{SVG}title").text == "G-single: T1 → T2 → T1; T1 wr T2; T2 rw T1"


def test_every_kind_in_words():
    assert op_words(view("cas", [1, 4], 0, 1, 0, key="k1")) == "cas k1 from 1 to 4"
    assert op_words(view("publish", {"id": "m7", "publisher": 2, "n": 5}, 0, 1, 0, key=None)) == \
        "publish m7 (publisher 2, n 5)"
    fetched = [[f"m{i}", i + 10] for i in range(6)]
    assert op_words(view("fetch", fetched, 0, 1, 0, key=None)) == "fetch -> m0@10, m1@11, m2@12 … m5@15 (6)"
    assert op_words(view("drain", {"replica": "nats2", "messages": [["m1", 1]]}, 0, 1, 0, key=None)) == \
        "final drain of nats2 -> m1@1"
    assert op_words(view("txn", [["append", "x", 1], ["r", "y", [1, 2]], ["r", "z", None]], 0, 1, 0, key=None)) == \
        "txn append x 1, read y -> [1 2], read z"


def test_the_run_report_draws_its_counterexample_with_the_fault_shaded(tmp_path):
    page = render(report(tmp_path), "html")
    start = page.index('<svg id="counterexample"')
    svg = page[start:page.index("</svg>", start) + 6]
    assert ids(svg, r"counterexample-fault-\d") == ["counterexample-fault-1"]  # kill etcd1, 4 s to 6 s
    assert ids(svg, r"counterexample-op-\d+")
