"""The queue model on real runs: nats under a kill keeps every acknowledged message, delivers each once and its
replicas agree; a deliberately broken nats (it deletes some messages right after acknowledging them, and sends some
back to the stream instead of acknowledging them while telling its client it did) fails its run for exactly that.
Both run through the production worker, load and final phase, on private copies in ports 32000-32990.
"""

from __future__ import annotations

import asyncio
import json
import os
import types
from pathlib import Path
from collections import Counter

import pytest

from durable_chaos.safety.history import read_history
from durable_chaos.safety.queue import check_queue
from subjects import registry
from subjects.nats import NATS, Nats
from subjects.nats.connection import queue_stream
from subjects.nats.session import NatsSession, _run
from tests.conftest import private_copy, run_to_report, starter
from tests.unit.test_queue_checker import brute_force

PORT_RANGE = (32000, 32990)
QUEUE_CHECKS = {"lost messages", "duplicated messages", "unexpected messages", "publisher order",
                "replica agreement", "stream sequence order"}


pytestmark = pytest.mark.usefixtures("own_state_dir")


async def run(client, task_queue, copy, **kw):
    return await run_to_report(client, task_queue, copy, "queue", **kw)


def history(report):
    ops = read_history(Path(report.safety.history)).ops
    return ops, {f.name: f for f in check_queue(ops, token_name="stream sequence", gapless=True,
                                                keeps_delivered=True)}


def coherent(report, ops) -> dict:
    """The report's figures are the history's, and each check's verdict and count are the brute force's."""
    safety = report.safety
    assert safety.model == "queue"
    assert {c.name for c in safety.checks} == QUEUE_CHECKS
    publishes = [op for op in ops if op.kind == "publish"]
    assert safety.ops == len([op for op in ops if not op.final])
    assert safety.acked_writes == sum(1 for op in publishes if op.outcome == "ok") > 0
    assert sum(1 for op in ops if op.kind == "fetch" and op.outcome == "ok" and op.value) > 0
    drains = [op for op in ops if op.kind == "drain"]
    assert sorted(op.value["replica"] for op in drains if op.outcome == "ok") == list(NATS.services), drains
    expected = brute_force(ops, keeps_delivered=True)  # a nats stream is a log: it keeps what it delivered
    verdicts = {c.name: c.verdict for c in safety.checks}
    for name, verdict in verdicts.items():
        if name in expected:
            assert verdict == expected[name][0], (name, [c.detail for c in safety.checks if c.name == name])
    assert safety.lost_writes == expected["lost messages"][1]
    return expected


async def test_nats_keeps_every_acknowledged_message_under_a_kill_of_the_stream_leader(client, task_queue):
    async with private_copy("nats", PORT_RANGE) as copy:
        report = await run(client, task_queue, copy, fault="kill", target="leader")

    ops, _ = history(report)
    coherent(report, ops)
    safety = report.safety
    details = {c.name: c.detail for c in safety.checks}
    errors = Counter(f"{op.kind} {op.outcome}: {op.error}" for op in ops if op.outcome != "ok")
    print(f"\nnats under kill of {report.target}: {safety.ops} operations, {safety.acked_writes} acknowledged "
          f"publishes; " + "; ".join(f"{c.name}: {c.verdict}" for c in safety.checks) + f"\n{details}\n{errors}")
    assert safety.verdict == "ok", safety.reasons
    assert report.verdict == "pass", report.reasons
    assert safety.lost_writes == 0


# -- a broken nats ---------------------------------------------------------------------------------------------------

DROPPED: list[str] = []  # ids the broken session deleted right after they were acknowledged
SENT_BACK: list[int] = []  # sequences it sent back to the stream while telling its client they were acknowledged


class BrokenNatsSession(NatsSession):
    async def publish(self, client: int, message: dict, timeout: float) -> int:
        seq = await super().publish(client, message, timeout)
        if int(str(message["id"]).rsplit("-", 1)[1]) % 7 == 3:
            nc = await self.nats.client(timeout)
            await nc.jsm(timeout=timeout).delete_msg(queue_stream(_run(message))[0], seq)
            DROPPED.append(message["id"])
        return seq

    async def _acknowledge(self, msg, timeout: float) -> None:
        seq = msg.metadata.sequence.stream
        if seq % 11 == 5 and msg.metadata.num_delivered == 1:
            await msg.nak()  # redelivered at once, to whichever fetch comes next
            SENT_BACK.append(seq)
        else:
            await super()._acknowledge(msg, timeout)


class BrokenNats(Nats):
    name = "nats-broken"
    default_project = "chaos-nats-broken"

    def session(self, instance, members):
        return BrokenNatsSession(self.client_urls(instance.port_base), self.monitor_urls(instance.port_base))


async def test_a_nats_that_loses_and_redelivers_acknowledged_messages_fails_its_run_for_that(client, task_queue,
                                                                                             monkeypatch):
    known = registry._entry_points()
    entry = types.SimpleNamespace(value="tests.integration.test_queue_runs:BrokenNats", load=lambda: BrokenNats)
    monkeypatch.setattr(registry, "_entry_points", lambda: {**known, "nats-broken": entry})
    DROPPED.clear()
    SENT_BACK.clear()
    async with private_copy("nats-broken", PORT_RANGE) as copy:
        report = await run(client, task_queue, copy, fault="kill", target="follower")

    ops, found = history(report)
    expected = coherent(report, ops)
    safety = report.safety
    assert safety.verdict == "violated" and report.verdict == "fail"
    verdicts = {c.name: c.verdict for c in safety.checks}
    # Every acknowledged message it deleted is counted lost, fetched first or not (the stream is a log), and
    # nothing else.
    acked = {op.value["id"] for op in ops if op.kind == "publish" and op.outcome == "ok"}
    assert safety.lost_writes == len(set(DROPPED) & acked) > 0
    assert verdicts["lost messages"] == "violated"
    # Each message sent back and fetched again shows as a duplicate delivery.
    twice = {mid for mid, n in Counter(mid for op in ops if op.kind == "fetch" and op.outcome == "ok"
                                       for mid, _ in op.value).items() if n > 1}
    assert twice and verdicts["duplicated messages"] == "violated"
    assert found["duplicated messages"].count == expected["duplicated messages"][1] >= len(twice)
    # The counterexample is the first lost message: its publish, acknowledged, marked.
    example = safety.counterexample
    assert example.checker == "lost messages" and example.ops[example.stuck].kind == "publish"
    assert example.ops[example.stuck].value["id"] in DROPPED
    # `check` on the run's folder, told nothing, judges it as the run did (a log: checked-as.json says so).
    again = await asyncio.to_thread(starter, "check", "--json", safety.history, env=dict(os.environ))
    assert again.returncode == 1, again.stderr
    assert {c["name"]: c["verdict"] for c in json.loads(again.stdout)["checks"]} == verdicts
    print(f"\nbroken nats: {len(DROPPED)} deleted after their ack, {len(SENT_BACK)} sent back; "
          + "; ".join(f"{c.name}: {c.verdict} ({c.detail[:160]})" for c in safety.checks))
