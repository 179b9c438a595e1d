"""Data safety on real systems: a full chaos run's report says whether the cluster lost data, and is right.

A deliberately broken key-value server (tests/data/broken-kv: it acknowledges writes it drops) must fail its run
for exactly that reason, naming a write it really dropped; etcd under a fault must come out `ok`. Each runs on a
private copy in ports 30000-31990, through the production worker.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from durable_chaos.safety.history import read_history
from durable_chaos.safety.linearizability import linearizable
from durable_chaos.safety.models import CAS_REGISTER, written
from tests.conftest import ROOT, private_copy, run_to_report

PORT_RANGE = (30000, 31990)
BROKEN_KV = ROOT / "tests" / "data" / "broken-kv"


pytestmark = pytest.mark.usefixtures("own_state_dir")


async def run(client, task_queue, copy, **kw):
    return await run_to_report(client, task_queue, copy, "safety", **kw)


def history_lines(report) -> list[dict]:
    """The run's stored history, line by line: Jepsen's shape (docs/history-format.md)."""
    return [json.loads(line) for part in sorted(Path(report.safety.history).glob("*.jsonl.gz"))
            for line in gzip.open(part, "rt")]


def completions(lines: list[dict]) -> list[dict]:
    return [e for e in lines if e["type"] != "invoke" and e["process"] != "nemesis"]


async def test_a_system_that_drops_acknowledged_writes_fails_its_run_for_that(client, task_queue, tmp_path):
    async with private_copy(str(BROKEN_KV), PORT_RANGE) as copy:
        report = await run(client, task_queue, copy)
        async with httpx.AsyncClient(trust_env=False) as http:
            dropped = (await http.get(f"http://127.0.0.1:{copy.instance.port(1)}/dropped")).json()

    safety = report.safety
    assert safety.verdict == "violated", safety
    # Everything else went right: the run fails for the lost data alone.
    assert report.final_check is not None and report.final_check.ok
    assert report.time_to_detect_s is not None and report.diagnosis.correct
    assert report.verdict == "fail"
    assert [r for r in report.reasons if r.startswith("data safety")] == [
        f"data safety violated: {'; '.join(safety.reasons)}"]
    # The counterexample is a write the server acknowledged and really dropped, and the final read that misses it.
    example = safety.counterexample
    assert example.checker == "lost writes"
    write, final = example.ops[0], example.ops[-1]
    assert write.kind == "write" and write.outcome == "ok" and final.final and final.value is None
    assert {"key": write.key, "value": write.value, "rev": write.token} in dropped
    # Every dropped write the load saw acknowledged is counted, and nothing else.
    acked = {(e["key"], e["value"]) for e in completions(history_lines(report))
             if e["f"] == "write" and e["type"] == "ok"}
    assert safety.lost_writes == len({(d["key"], d["value"]) for d in dropped} & acked) > 0
    assert next(c.name for c in safety.checks if c.verdict == "violated") == "lost writes"


async def test_a_system_that_answers_from_a_stale_replica_is_not_linearizable(client, task_queue, monkeypatch):
    # Reads go to the broken server's replica, one write behind: a client reads a value after it was replaced,
    # and the final reads miss each key's last write.
    monkeypatch.setenv("BROKEN_KV_READS", "stale")
    async with private_copy(str(BROKEN_KV), PORT_RANGE) as copy:
        report = await run(client, task_queue, copy, fault="stop")

    safety = report.safety
    assert safety.verdict == "violated" and safety.model == "cas-register", safety
    assert {c.name: c.verdict for c in safety.checks}["linearizability"] == "violated"
    # The stored history, checked alone, shows it even on the keys whose writes the server keeps (it drops those
    # to keys ending in 3, the other test's failure): the operation no order can place read (or swapped from) a
    # value that an acknowledged write had replaced before it was sent.
    ops = [op for op in read_history(Path(safety.history)).ops if not op.key.endswith("3")]
    found = linearizable(ops, CAS_REGISTER)
    assert found.verdict == "violated" and found.stuck.kind in ("read", "cas")
    stuck = found.stuck
    seen = stuck.value if stuck.kind == "read" else stuck.value[0]
    replaced_before = [op for op in ops if op.key == stuck.key and op.outcome == "ok" and written(op) is not None
                       and written(op) != seen and op.complete_ns < stuck.invoke_ns]
    writer = next(op for op in ops if op.key == stuck.key and written(op) == seen)
    assert any(op.invoke_ns > writer.complete_ns for op in replaced_before), (stuck, found.detail)


@pytest.mark.parametrize("fault", ["kill", "partition"])
async def test_etcd_keeps_every_acknowledged_write_under_a_fault(etcd, client, task_queue, fault):
    report = await run(client, task_queue, etcd, fault=fault)  # one copy for both faults: each run's keys are its own

    safety = report.safety
    assert report.verdict == "pass", report.reasons
    assert safety.verdict == "ok", safety.reasons
    assert safety.lost_writes == 0 and safety.acked_writes > 0 and safety.keys > 0
    assert {c.name: c.verdict for c in safety.checks} == {
        "lost writes": "ok", "linearizability": "ok", "revision order": "ok"}
    # The history is on disk, holds the load and the final read of every key written, and stays out of the event
    # history (only the windows are there).
    lines = history_lines(report)
    done = completions(lines)
    assert len([e for e in done if not e.get("final")]) == safety.ops
    assert len([e for e in lines if e["type"] == "invoke"]) == len(done)
    assert {e["key"] for e in done if e.get("final")} == {e["key"] for e in done if e["f"] in ("write", "cas")}
    # The load takes locks the way etcd's clients do, by compare-and-set in a transaction (some may find the key
    # changed under them: not every run). The fault window is in the history for `starter.py check --html`.
    assert safety.model == "cas-register"
    assert "ok" in {e["type"] for e in done if e["f"] == "cas"}
    assert [e["f"] for e in lines if e["process"] == "nemesis"] == ["start", "stop"]
    assert safety.history_bytes > 0
    a = safety.availability
    assert a.before.ops > 0 and a.during.ops > 0 and a.longest_gap_ms > 0 and a.before.p50_ms > 0
