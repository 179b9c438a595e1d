"""The nats session's queue operations against a real 3-member JetStream cluster: publishes get the sequences the
stream holds them at, fetches deliver each message once, and the drain reads every replica's own copy.

A client cannot pick the replica that answers a direct get: NATS spreads a queue group's requests (every replica's
direct get responder is a member of one) over its members on all servers, even when one is on the server the request
came in on. The first test measures that, which is why the drain reads each replica while it leads the stream.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
import pytest_asyncio

from activities.docker import open_session, service_container
from durable_chaos.safety.history import Op
from durable_chaos.safety.queue import check_queue
from subjects.nats import NATS
from subjects.nats.connection import queue_stream
from subjects.nats.session import _read_replica

from tests.conftest import private_copy, until

PORT_RANGE = (29000, 29990)


@pytest_asyncio.fixture(scope="module")
async def cluster():
    async with private_copy("nats", PORT_RANGE) as copy:
        yield copy


async def test_a_queue_groups_requests_are_spread_over_servers_not_kept_local(cluster):
    urls = NATS.client_urls(cluster.instance.port_base)
    conns = {svc: await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1) for svc, url in urls.items()}
    try:
        answered: dict[str, int] = {}
        for svc, nc in conns.items():
            async def reply(msg, svc=svc):
                await msg.respond(svc.encode())
            await nc.subscribe("locality.probe", queue="g", cb=reply)
        for nc in conns.values():
            await nc.flush()
        await asyncio.sleep(0.5)  # the subscriptions reach the other servers over the routes
        for svc, nc in conns.items():
            for _ in range(50):
                by = (await nc.request("locality.probe", b"", timeout=2)).data.decode()
                answered[f"{svc}<-{by}"] = answered.get(f"{svc}<-{by}", 0) + 1
    finally:
        for nc in conns.values():
            await nc.close()
    # Each server's clients were answered by subscribers on other servers too.
    for svc in urls:
        assert sum(n for pair, n in answered.items() if pair.startswith(f"{svc}<-") and pair != f"{svc}<-{svc}") > 0


def _op(kind: str, began: int, value, outcome: str = "ok", token: int | None = None, process: int = 0,
        final: bool = False) -> Op:
    return Op(kind=kind, outcome=outcome, invoke_ns=began, complete_ns=time.time_ns(), value=value, token=token,
              process=process, final=final)


async def test_published_messages_are_fetched_once_and_held_by_every_replica(cluster):
    run = uuid.uuid4().hex[:8]
    ops: list[Op] = []
    async with open_session(cluster.instance) as session:
        for i in range(60):
            message = {"id": f"{run}-w-{i}", "publisher": i % 3, "n": i}
            began = time.time_ns()
            ops.append(_op("publish", began, message, token=await session.publish(i % 3, message, 2.0),
                           process=i % 3))
            if i % 7 == 6:
                began = time.time_ns()
                ops.append(_op("fetch", began, await session.fetch(i % 3, 2.0), process=i % 3))
        assert [op.token for op in ops if op.kind == "publish"] == list(range(1, 61))  # a new stream of the run's
        delivered = [m for op in ops if op.kind == "fetch" for m in op.value]
        assert delivered and [seq for _, seq in delivered] == list(range(1, len(delivered) + 1))
        while True:  # the rest, until the consumer has nothing more
            began = time.time_ns()
            got = await session.fetch(0, 2.0)
            if not got:
                break
            ops.append(_op("fetch", began, got))
        began = time.time_ns()
        drained = await session.drain(5.0)
    assert set(drained) == set(NATS.services)
    expected = [[f"{run}-w-{i}", i + 1] for i in range(60)]
    assert all(messages == expected for messages in drained.values())
    ops += [_op("drain", began, {"replica": svc, "messages": messages}, final=True)
            for svc, messages in drained.items()]
    findings = {f.name: f for f in check_queue(ops)}
    assert {name: f.verdict for name, f in findings.items()} == dict.fromkeys(findings, "ok")
    assert "all 60 acknowledged messages" in findings["lost messages"].detail

    # The run's first publish made its stream and deleted earlier runs' streams.
    async with open_session(cluster.instance) as session:
        other = uuid.uuid4().hex[:8]
        assert await session.publish(0, {"id": f"{other}-w-0", "publisher": 0, "n": 0}, 2.0) == 1
        nc = await session.nats.client(2.0)
        names = [info.config.name for info in await nc.jsm(timeout=2).streams_info()]
        assert queue_stream(other)[0] in names and queue_stream(run)[0] not in names


async def test_the_drain_reads_each_replicas_own_copy_and_says_why_one_is_down(cluster):
    """A follower killed while the stream grows cannot be read, and the drain says why; started again, its copy is
    read as it is while it catches up (fewer messages than the others hold: what it has, not what the leader has),
    then whole."""
    run = uuid.uuid4().hex[:8]
    async with open_session(cluster.instance) as session:
        for i in range(20):
            await session.publish(0, {"id": f"{run}-w-{i}", "publisher": 0, "n": i}, 2.0)
        stream = queue_stream(run)[0]
        nc = await session.nats.client(2.0)
        leader = (await nc.jsm(timeout=2).stream_info(stream)).cluster.leader
        victim = next(svc for svc in NATS.services if svc != leader)
        container = await asyncio.to_thread(service_container, cluster.docker, cluster.instance, victim)
        await asyncio.to_thread(container.kill, "KILL")
        gate = asyncio.Semaphore(100)

        async def publish(i: int) -> None:
            async with gate:
                await session.publish(i % 10, {"id": f"{run}-w-{i}", "publisher": i % 10, "n": i}, 5.0)

        total = 5000
        await asyncio.gather(*(publish(i) for i in range(20, total)))
        held = await session.drain(30.0)
        assert sorted(held) == sorted(NATS.services) and isinstance(held.pop(victim), str)
        assert all(len(messages) == total for messages in held.values())

        await asyncio.to_thread(container.start)
        sizes: list[int] = []

        async def whole() -> bool:
            try:
                place_by = asyncio.get_running_loop().time() + 1.0
                sizes.append(len(await _read_replica(nc, stream, victim, place_by)))
            except Exception:  # noqa: BLE001 - refused while the member starts
                return False
            return sizes[-1] == total

        await until(60, whole)
        assert sizes[0] < total, f"the restarted replica was read whole at once: {sizes}"
        assert (await session.drain(30.0)).keys() == set(NATS.services)


async def test_a_stream_that_is_gone_holds_none_of_its_acknowledged_messages(cluster):
    """A power loss of every member can lose the stream's own definition (session 18, CI35): after it, the meta
    group knows no queue stream at all. That is every acknowledged message lost, not a drain that could not tell."""
    run = uuid.uuid4().hex[:8]
    ops: list[Op] = []
    async with open_session(cluster.instance) as session:
        for i in range(20):
            message = {"id": f"{run}-g-{i}", "publisher": i % 2, "n": i}
            began = time.time_ns()
            ops.append(_op("publish", began, message, token=await session.publish(i % 2, message, 2.0),
                           process=i % 2))
        nc = await session.nats.client(2.0)
        await nc.jsm(timeout=2).delete_stream(queue_stream(run)[0])  # as the power loss lost it
        began = time.time_ns()
        drained = await session.drain(5.0)
    assert drained == {svc: [] for svc in NATS.services}
    ops += [_op("drain", began, {"replica": svc, "messages": messages}, final=True)
            for svc, messages in drained.items()]
    lost = {f.name: f for f in check_queue(ops)}["lost messages"]
    assert lost.verdict == "violated" and lost.detail.startswith("20 acknowledged messages lost"), lost.detail


async def test_the_first_fetch_right_after_a_run_s_consumer_is_made_gets_its_messages(cluster):
    """CI (stop 35) saw a fetch answered 503 (no responders): the pull went out before the new consumer had a
    leader to take it. A run's first fetch comes right after its consumer is made, so it must wait for that leader
    rather than fail a fetch that the subject would have answered a moment later."""
    for _ in range(15):
        run = uuid.uuid4().hex[:8]
        async with open_session(cluster.instance) as session:
            await session.publish(0, {"id": f"{run}-f-0", "publisher": 0, "n": 0}, 2.0)
            assert await session.fetch(0, 2.0) == [[f"{run}-f-0", 1]]
