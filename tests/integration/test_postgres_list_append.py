"""PostgreSQL's list-append load on a real Patroni cluster: transactions append and read lists at serializable
isolation, a serialization failure is an operation that did not happen, and a chaos run that partitions the leader
gets a safety section from the list-append checker that says what happened (the replication is asynchronous:
appends acknowledged by the old primary may be gone after a failover). A private copy in ports 21000-21990.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import pytest_asyncio

from activities.docker import open_session
from durable_chaos.contracts import ChaosInput, final_report
from durable_chaos.safety.list_append import GLOSS
from subjects import NotApplied
from tests.conftest import private_copy, running_worker
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (21000, 21990)  # below the ephemeral ports (32768-60999), which a busy host fills


@pytest_asyncio.fixture(scope="module")
async def cluster():
    async with private_copy("postgres", PORT_RANGE) as copy:
        yield copy


pytestmark = pytest.mark.usefixtures("own_state_dir")


def history_lines(folder: str) -> list[dict]:
    return [json.loads(line) for part in sorted(Path(folder).glob("*.jsonl.gz")) for line in gzip.open(part, "rt")]


async def test_transactions_append_and_read_lists_and_a_conflict_does_not_commit(cluster):
    key = f"t-{uuid.uuid4().hex[:6]}"
    async with open_session(cluster.instance) as session:
        assert (session.model, session.isolation) == ("list-append", "serializable")
        assert await session.transact(0, [["r", key, None]], 2.0) == [["r", key, None]]
        assert await session.transact(0, [["append", key, 1], ["append", key, 2], ["r", key, None]], 2.0) == [
            ["append", key, 1], ["append", key, 2], ["r", key, [1, 2]]]
        assert await session.transact(1, [["r", key, None], ["append", key, 3]], 2.0) == [
            ["r", key, [1, 2]], ["append", key, 3]]

        # One client handed transactions faster than they answer runs them one at a time: none takes in another's
        # statements, so each read ends with its own append and every append is there once.
        several = await asyncio.gather(*(session.transact(4, [["append", key, 50 + i], ["r", key, None]], 5.0)
                                         for i in range(8)))
        assert all(done[1][2][-1] == 50 + i for i, done in enumerate(several))
        after = (await session.transact(4, [["r", key, None]], 2.0))[0][2]
        assert sorted(after) == [1, 2, 3] + list(range(50, 58))

        # Two clients read the same version and both append: at serializable one of them must not commit.
        outcomes = []
        for attempt in range(20):  # the two must overlap: retried until they do
            asks = [[["r", key, None], ["append", key, 100 + 10 * attempt + c]] for c in (2, 3)]
            results = await asyncio.gather(*(session.transact(c, ask, 5.0) for c, ask in zip((2, 3), asks)),
                                           return_exceptions=True)
            outcomes = [type(r).__name__ if isinstance(r, BaseException) else "ok" for r in results]
            if "NotApplied" in outcomes:
                break
        assert sorted(outcomes) == ["NotApplied", "ok"], outcomes
        failed = next(r for r in results if isinstance(r, NotApplied))
        assert "could not serialize" in str(failed) or "SerializationFailure" in str(failed)
        # The client whose transaction was rolled back keeps working.
        final = (await session.transact(2, [["r", key, None]], 2.0))[0][2]
        committed = next(r for r in results if not isinstance(r, BaseException))
        assert final[-1] == committed[1][2] and len(final) == len(set(final))


async def test_a_partition_of_the_leader_gets_a_list_append_verdict(cluster, client, task_queue):
    # The module's copy: the run's keys are its own, and its preflight waits for the steady state first.
    async with running_worker(client, task_queue):
        report = await final_report(await client.start_workflow(
            ChaosDemoWorkflow.run, ChaosInput(subject=cluster.ref, countdown_s=1, fault="partition", target="leader"),
            id=f"t-la-{uuid.uuid4().hex[:8]}", task_queue=task_queue))

    safety = report.safety
    checks = {c.name: c for c in safety.checks}
    sent = [op for op in history_lines(safety.history) if op["type"] != "invoke" and not op.get("final")]
    print(f"\npostgres under a partition of the leader: safety {safety.verdict}; {len(sent)} transactions: "
          f"{Counter(op['type'] for op in sent)}; errors: {Counter(op.get('error') for op in sent).most_common(4)}")
    for c in safety.checks:
        print(f"  {c.name}: {c.verdict}: {c.detail[:400]}")
    assert safety.model == "list-append" and safety.ops > 0 and safety.acked_writes > 0
    # The list-append checks ran: lost appends against the final reads, and the isolation summary.
    assert {"lost appends", "transactions"} <= set(checks)
    assert checks["lost appends"].verdict in ("ok", "violated")  # every key appended to was read at the end
    violated = [c for c in safety.checks if c.verdict == "violated"]
    assert (safety.verdict == "violated") == bool(violated), safety.reasons
    if safety.verdict == "violated":
        # Named: an anomaly (with its plain-words meaning and an explanation) or lost appends (with counts).
        for c in violated:
            assert c.name in GLOSS or c.name in ("lost appends", "transactions"), c.name
            if c.name in GLOSS:
                assert c.detail.startswith(GLOSS[c.name]) and " found" in c.detail
        if checks["lost appends"].verdict == "violated":
            assert " acknowledged appends " in checks["lost appends"].detail
            # Counted again from the stored history: acknowledged appends the final read of their key lacks. Each was
            # acknowledged once the leader was cut off (asynchronous replication is behind by far less than a
            # second), by the old primary that kept acknowledging until it stepped down.
            lines = history_lines(safety.history)
            final = {m[1]: set(m[2] or []) for op in lines if op.get("final") and op["type"] == "ok"
                     for m in op["value"]}
            lost = [(m[2], op) for op in sent if op["type"] == "ok" for m in op["value"]
                    if m[0] == "append" and m[2] not in final[m[1]]]
            assert safety.lost_writes == len(lost) > 0
            injected_ns = report.injected_at.timestamp() * 1e9
            assert all(op["time"] > injected_ns - 1e9 for _, op in lost), "appends lost from before the fault"
        example = safety.counterexample
        assert example is not None and example.ops
        if example.cycle:
            assert example.anomaly in GLOSS and all(e.why for e in example.cycle)
    else:
        assert safety.verdict == "ok", safety.reasons
        assert checks["transactions"].detail.startswith("serializable: no anomaly")
