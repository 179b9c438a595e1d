"""The report's data safety section in every format, drawn from a real check of a history on disk."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from rich.console import Console

from durable_chaos.cli.render import report_view
from durable_chaos.cli.reports import render
from durable_chaos.contracts import ChaosReport, FaultEffect, FaultState
from durable_chaos.safety.checkers import check
from durable_chaos.safety.history import Op, write_part

SVG = "{http://www.w3.org/2000/svg}"


def history(start: datetime) -> list[Op]:
    """Ten seconds at 20 ops/s; the fault from 4 s to 6 s times writes out and refuses reads; k1's last
    acknowledged write is missing from the final read."""
    t0 = int(start.timestamp() * 1e9)
    ops = []
    for i in range(200):
        at = t0 + i * 50_000_000
        kind, key = ("write", f"k{i % 3}") if i % 2 else ("read", f"k{i % 3}")
        faulty = 4e9 <= at - t0 < 6e9
        outcome = ("info" if kind == "write" else "fail") if faulty else "ok"
        value = f"v{i}" if kind == "write" else None
        ops.append(Op(kind=kind, outcome=outcome, invoke_ns=at, complete_ns=at + (500 if faulty else 2) * 1_000_000,
                      key=key, value=value, error="timeout" if faulty else None))
    last = {op.key: op.value for op in ops if op.kind == "write" and op.outcome == "ok"}
    last["k1"] = next(op.value for op in ops if op.key == "k1" and op.kind == "write")  # an old value came back
    end = t0 + 11_000_000_000
    ops += [Op(kind="read", outcome="ok", invoke_ns=end, complete_ns=end + 1_000_000, key=k, value=v, final=True)
            for k, v in last.items()]
    ops += [Op(kind="write", outcome="fail", invoke_ns=t0 + 5_000_000_000, complete_ns=t0 + 5_000_000_000, key="k0",
               value="capped", capped=True, error="not sent: concurrency cap reached")]
    return ops


def report(tmp_path) -> ChaosReport:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    ops = history(start)
    write_part(tmp_path / "1.jsonl.gz", [op for op in ops if not op.final])
    write_part(tmp_path / "final.jsonl.gz", [op for op in ops if op.final])
    injected, healthy = start + timedelta(seconds=4), start + timedelta(seconds=6)
    safety = check(ops, fault_start_ns=int(injected.timestamp() * 1e9), fault_end_ns=int(healthy.timestamp() * 1e9))
    safety = safety.model_copy(update={"history": str(tmp_path), "history_bytes": 1234})
    return ChaosReport(workflow_id="w", run_id="r", subject="etcd", project="p", fault="kill", target="etcd1",
                       verdict="fail", reasons=[f"data safety violated: {safety.reasons[0]}"], started_at=start,
                       finished_at=start + timedelta(seconds=12), injected_at=injected, restored_at=healthy,
                       fault_state=FaultState.RESTORED, safety=safety)


def test_the_check_behind_the_report(tmp_path):
    s = report(tmp_path).safety
    assert s.verdict == "violated" and s.counterexample.checker == "lost writes"
    a = s.availability
    assert (a.before.errors, a.during.errors, a.after.errors, a.capped) == (0, 41, 0, 1)
    assert a.longest_gap_ms == 2050.0  # the last answer before the fault at 3.952 s, the next at 6.002 s


def test_html_plots_each_operation_with_failures_highlighted(tmp_path):
    text = render(report(tmp_path), "html")
    svg = ET.fromstring(text[text.index('<svg id="latency"'):text.index("</svg>", text.index('<svg id="latency"')) + 6])
    points = {outcome: len(svg.findall(f".//{SVG}g[@id='latency-{outcome}']//{SVG}use")) for outcome in
              ("ok", "fail", "info")}
    assert points == {"ok": 160, "fail": 20, "info": 20}  # the capped op was never sent: no latency to plot
    assert svg.find(f".//{SVG}g[@id='latency-fault-period']") is not None
    assert '<section id="safety">' in text and "violated" in text


def test_html_without_the_history_on_this_machine_says_so(tmp_path):
    r = report(tmp_path)
    r.safety.history = str(tmp_path / "elsewhere")
    assert "is not on this machine" in render(r, "html")


def test_markdown_terminal_and_junit_carry_the_verdict_and_the_counterexample(tmp_path):
    r = report(tmp_path)
    md = render(r, "md")
    assert "## Data safety" in md and "- **verdict:** violated" in md
    assert "final read k1 -> v1 ok" in md
    r.effect = FaultEffect(took_effect=True, evidence=["etcd2: power lost; 5200 bytes written to 3 files and not "
                                                       "fsynced were dropped"])
    console = Console(file=io.StringIO(), width=200)
    console.print(report_view(r))
    screen = console.file.getvalue()
    assert "data safety: violated" in screen and "longest gap without a successful operation 2050 ms" in screen
    assert "etcd2: power lost; 5200 bytes written to 3 files and not fsynced were dropped" in screen  # what it did
    junit = ET.fromstring(render(r, "junit"))
    assert junit.find(".//failure").get("type") == "DataSafetyViolated"
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["safety_verdict"] == "violated" and props["lost_writes"] == str(r.safety.lost_writes) != "0"
