"""The nats subject's session: health and roles from the monitor endpoints, traffic through one NATS connection.

Its load is a queue (the `queue` model, safety/queue.py): each load client publishes messages with an id (sent as
Nats-Msg-Id, JetStream's deduplication key) to the run's own R3 stream and is told the sequence it got; fetches pull
batches from one durable consumer and acknowledge every message; after the restore, `drain` reads the whole stream
from each replica on its own. Its `write`/`read` (keys as subjects of a stream of their own) remain for probes and
tests of a register on JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timezone

import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.client import Client as NatsClient

from durable_chaos.contracts import CheckResult
from subjects.base import NotApplied, Reading, Session
from subjects.checks import ask_members, member_violations
from subjects.http import http_client
from subjects.nats.connection import (KV_PREFIX, KV_STREAM, QUEUE_STREAM_PREFIX, Connection, describe,
                                      queue_stream)
from subjects.nats.monitor import View, invariants, member


# The queue's consumer: durable, so every load window's session pulls from the same one, and acknowledged message
# by message. A fetch takes up to FETCH_BATCH messages and waits at most FETCH_WAIT_S for the first. An ack is
# confirmed by the server (ack_sync) before the fetch counts as ok, so a message delivered again after an ok fetch is
# a redelivery of an acknowledged message (a duplicate); ACK_WAIT_S, after which the server redelivers one not
# acknowledged, is far longer than a fetch may take, so an ok fetch never races its own redelivery.
CONSUMER = "LOAD"
FETCH_BATCH = 10
FETCH_WAIT_S = 0.25
ACK_WAIT_S = 30.0
NO_LEADER_RETRY_S = 0.05
# The drain: the share of a replica's reading time spent getting a consumer placed on it (each lands on one of
# three; a replica that just rejoined may be passed over for a while: CI saw 20 tries in a row miss one), and how
# many messages a fetch takes.
PLACEMENT_SHARE = 0.7
API_TIMEOUT_S = 2.0
READ_BATCH = 1000


def _run(message: dict) -> str:
    """The run a message belongs to: its id starts with it (safety/workloads.py's queue makes it so)."""
    return str(message["id"]).split("-", 1)[0]


class NatsSession(Session):
    model = "queue"
    token_name = "stream sequence"
    gapless_tokens = True
    keeps_delivered = True  # the run's stream has JetStream's default retention (limits): nothing leaves it

    def __init__(self, client_urls: dict[str, str], monitor_urls: dict[str, str]):
        self.monitor_urls = monitor_urls
        self.http = http_client()
        self.client_urls = client_urls
        self.nats = Connection(client_urls)
        self._run: str | None = None  # the run whose messages this session published: its fetches read that stream
        self._subs: dict[int, object] = {}  # load client -> its pull subscription on the run's consumer
        self._consumer = asyncio.Lock()

    async def _views(self, timeout: float) -> dict[str, View]:
        answers = await asyncio.gather(*(member(self.http, url, svc, timeout)
                                         for svc, url in self.monitor_urls.items()))
        return {m.service: view for m, view in answers if view is not None}

    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)

        async def publish() -> tuple[list[str], bool]:
            try:
                async with asyncio.timeout(timeout):
                    _, created = await self.nats.publish("chaos.probe", at.isoformat().encode(), timeout)
                return [], created
            except Exception as exc:  # noqa: BLE001 - a sick subject is a result, never an exception
                return [f"acknowledged publish failed: {describe(exc)}"], False

        # A leaderless stream often answers "no responders" at once: with `fail_fast`, a failed publish is as
        # certain a violation as a member that refuses.
        asked = await ask_members(
            at, (member(self.http, url, svc, timeout) for svc, url in self.monitor_urls.items()),
            lambda answer: answer[0], fail_fast, also=publish(), also_violations=lambda published: published[0])
        if isinstance(asked, CheckResult):  # failed fast
            return asked
        answers, (publish_violations, created), latency = asked
        members = [m for m, _ in answers]
        views = {m.service: view for m, view in answers if view is not None}
        roles, stream_violations = invariants(views, self.monitor_urls)
        if created:
            # The stream was just made by this check: its first election takes a few tens of milliseconds.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while stream_violations:
                        await asyncio.sleep(0.05)
                        roles, stream_violations = invariants(await self._views(timeout), self.monitor_urls)
        violations = member_violations(members) + stream_violations + publish_violations
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations,
                           latency_ms=latency)

    async def roles(self, timeout: float) -> dict[str, str]:
        # From the monitor endpoints alone: no publish, no stream creation.
        return invariants(await self._views(timeout), self.monitor_urls)[0]

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        # An acknowledged publish to the key's subject; the stream's sequence is the token. "No responders" means no
        # stream took the message (a leaderless stream), and a connection that never opened sent nothing: those
        # certainly did not happen. When the connected server dies, nats-py fails over to another at once.
        try:
            async with asyncio.timeout(timeout):
                return (await self.nats.publish(KV_PREFIX + key, value.encode(), timeout, stream=KV_STREAM))[0]
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoServersError) as exc:
            raise NotApplied(describe(exc)) from exc

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        # The key's last message, asked of the stream leader (not a `direct` get, which a lagging replica may answer).
        async with asyncio.timeout(timeout):
            nc = await self.nats.client(timeout)
            try:
                msg = await nc.jsm(timeout=timeout).get_last_msg(KV_STREAM, KV_PREFIX + key)
            except nats.js.errors.NotFoundError:
                return Reading(None)
            return Reading(msg.data.decode(), msg.seq)

    async def publish(self, client: int, message: dict, timeout: float) -> int:
        # An acknowledged publish to the run's stream; "no responders" and no server reached certainly stored nothing.
        # The message id is JetStream's deduplication key: were the publish sent twice, the stream keeps one copy.
        self._run = _run(message)
        stream, subject = queue_stream(self._run)
        try:
            async with asyncio.timeout(timeout):
                seq, created = await self.nats.publish(subject, json.dumps(message).encode(), timeout, stream=stream,
                                                       headers={"Nats-Msg-Id": str(message["id"])})
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoServersError) as exc:
            raise NotApplied(describe(exc)) from exc
        if created:  # the run's first message: the streams of earlier runs are of no more use
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):  # the publish is acknowledged whatever becomes of this
                    await self._delete_queue_streams(keep=stream, timeout=timeout)
        return seq

    async def _delete_queue_streams(self, keep: str, timeout: float) -> None:
        jsm = (await self.nats.client(timeout)).jsm(timeout=timeout)
        for name in await self._queue_streams(timeout):
            if name != keep:
                await jsm.delete_stream(name)

    async def fetch(self, client: int, timeout: float) -> list[list]:
        """Pull a batch from the run's consumer and acknowledge each message, waiting for the server to confirm.
        Raises (outcome fail: a fetch changes no message) if any ack is not confirmed."""
        if self._run is None:
            raise NotApplied("nothing published through this session yet: which run's stream to read is unknown")
        async with asyncio.timeout(timeout):
            sub = await self._subscription(client, timeout)
            while True:
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=min(FETCH_WAIT_S, timeout / 2))
                    break
                except nats.errors.TimeoutError:
                    return []
                except nats.js.errors.ServiceUnavailableError:
                    # No responders: no consumer leader took the pull, so nothing was delivered. A consumer just
                    # made has none for a few milliseconds (a run's first fetch comes right after), and one whose
                    # leader died elects another: asked again until the fetch's time is up.
                    await asyncio.sleep(NO_LEADER_RETRY_S)
            got = []
            for msg in msgs:
                await self._acknowledge(msg, timeout)
                got.append([json.loads(msg.data)["id"], msg.metadata.sequence.stream])
            return got

    async def _acknowledge(self, msg, timeout: float) -> None:
        await msg.ack_sync(timeout=timeout)

    async def _subscription(self, client: int, timeout: float):
        async with self._consumer:
            if client not in self._subs:
                stream, subject = queue_stream(self._run)
                nc = await self.nats.client(timeout)
                config = nats.js.api.ConsumerConfig(
                    durable_name=CONSUMER, ack_policy=nats.js.api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S,
                    deliver_policy=nats.js.api.DeliverPolicy.ALL, filter_subject=subject)
                if not self._subs:  # the same config again is a no-op for the server
                    await nc.jsm(timeout=timeout).add_consumer(stream, config=config)
                self._subs[client] = await nc.jetstream(timeout=timeout).pull_subscribe_bind(durable=CONSUMER,
                                                                                            stream=stream)
            return self._subs[client]

    async def drain(self, timeout: float) -> dict[str, list[list]]:
        """Every message of the latest run's stream as each replica holds it: {service: [[id, seq], ...]}; for a
        replica that could not be read (one that is down), why not.

        A client cannot choose which replica answers a read: the stream's API (`STREAM.MSG.GET`) is answered by the
        leader, and a direct get by whichever replica the cluster picks (NATS spreads requests over a queue group's
        members on all servers, measured in tests/integration/test_nats_queue.py, so a connection to one server
        does not make its own replica answer). A consumer, though, runs on one replica and reads that replica's
        store, and the cluster says where it runs: each replica is read through a consumer placed on it, which is
        exact for that replica (what it holds while it is read; a replica still catching up may hold less)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with asyncio.timeout(timeout):
            nc = await self.nats.client(timeout)
            stream = await self._latest_queue_stream(timeout)
            if stream is None:
                # The meta group knows no queue stream: every replica holds none of its messages. Before the first
                # publish there are none to lose; after a power loss of every member the stream's own definition
                # can be gone, and with it every message it had acknowledged (a drain that failed would hide that).
                return {svc: [] for svc in self.client_urls}
            # A member that is down keeps refusing consumers until its share of the time is spent: the others'
            # copies are returned before the whole drain's time is up.
            share = max(0.1, (deadline - loop.time()) * 0.9)
            place_by = loop.time() + share * PLACEMENT_SHARE
            read = await asyncio.gather(*(asyncio.wait_for(_read_replica(nc, stream, svc, place_by), share)
                                          for svc in self.client_urls), return_exceptions=True)
            return {svc: describe(messages) if isinstance(messages, BaseException) else messages
                    for svc, messages in zip(self.client_urls, read)}

    async def _queue_streams(self, timeout: float) -> list[str]:
        """The queue streams' names, from the meta group (STREAM.NAMES): a list of stream infos leaves out a stream
        whose leader is slow to answer, as one is right after a member rejoined."""
        nc = await self.nats.client(timeout)
        while True:  # a question the meta group loses while it elects a leader is asked again (within `timeout`)
            try:
                answer = json.loads((await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=API_TIMEOUT_S)).data)
                break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.2)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        return [name for name in answer.get("streams") or [] if name.startswith(QUEUE_STREAM_PREFIX)]

    async def _latest_queue_stream(self, timeout: float) -> str | None:
        """The queue stream made last: normally the only one, a run's first publish deletes the others."""
        names = await self._queue_streams(timeout)
        if len(names) < 2:
            return names[0] if names else None
        jsm = (await self.nats.client(timeout)).jsm(timeout=timeout)
        return max([await jsm.stream_info(name) for name in names], key=lambda info: info.created).config.name

    async def aclose(self) -> None:
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.nats.aclose()
        await self.http.aclose()


async def _read_replica(nc: NatsClient, stream: str, svc: str, place_by: float) -> list[list]:
    """`svc`'s copy of the stream, through an ephemeral consumer (R1, no acks) that runs on `svc`: a consumer reads
    the store of the server it runs on. The cluster places each new one on one of the stream's replicas of its
    choosing, so consumers are made until one lands on `svc`, up to the loop time `place_by`."""
    jsm = nc.jsm(timeout=API_TIMEOUT_S)
    config = nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.NONE, num_replicas=1, mem_storage=True,
                                        inactive_threshold=30.0, deliver_policy=nats.js.api.DeliverPolicy.ALL)
    loop = asyncio.get_running_loop()
    refused: Exception | None = None
    tries = 0
    while tries == 0 or loop.time() < place_by:
        tries += 1
        consumer = None
        try:  # a consumer placed on a member that is down (or still starting) is refused: try again
            consumer = await jsm.add_consumer(stream, config=config)
            if consumer.cluster is not None and consumer.cluster.leader == svc:
                return await _read_all(nc, jsm, stream, consumer.name)
        except nats.errors.Error as exc:
            refused = exc
            await asyncio.sleep(0.1)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await jsm.delete_consumer(stream, consumer.name)
        if tries % 10 == 0:  # placed elsewhere ten times in a row: give a replica that just rejoined a moment
            await asyncio.sleep(0.2)
    raise RuntimeError(f"no consumer of {stream} could be read on {svc} in {tries} tries"
                       + (f" ({describe(refused)})" if refused else ""))


async def _read_all(nc: NatsClient, jsm, stream: str, consumer: str) -> list[list]:
    """Everything a consumer delivers until it has nothing pending; raises if it stops short (its server died)."""
    sub = await nc.jetstream(timeout=API_TIMEOUT_S).pull_subscribe_bind(durable=consumer, stream=stream)
    messages: list[list] = []
    try:
        while True:
            try:
                batch = await sub.fetch(READ_BATCH, timeout=API_TIMEOUT_S)
            except nats.errors.TimeoutError:
                if (await jsm.consumer_info(stream, consumer)).num_pending == 0:
                    return messages  # an empty stream, or the last batch was exactly full
                raise
            messages += [[json.loads(m.data)["id"], m.metadata.sequence.stream] for m in batch]
            if batch[-1].metadata.num_pending == 0:
                return messages
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
