"""The session's NATS connection: one per session to all three client ports, failing over as any NATS client does,
and acknowledged publishes to the subject's streams, created when nothing stores them yet."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from subjects.http import describe as describe_http

STREAM = "CHAOS"
# The load's keys, one subject each, in a stream of their own: only the load writes there (one run per subject at a
# time), so its sequence has no gap an acknowledged write cannot explain. The last message of a subject is the key's
# value: keeping only that one bounds the stream by the number of keys.
KV_STREAM = "CHAOS_KV"
KV_PREFIX = "chaoskv."
STREAMS = {
    # Bounded, so a long run of probes does not fill the members' disks; the oldest messages go first.
    STREAM: {"subjects": ["chaos.>"], "max_msgs": 200_000, "max_bytes": 256 * 1024 * 1024},
    KV_STREAM: {"subjects": [KV_PREFIX + ">"], "max_msgs_per_subject": 1, "max_bytes": 256 * 1024 * 1024},
}
# The queue load's messages: each run in a stream of its own (CHAOS_Q_<run>, subject chaosq.<run>), so its drain reads
# exactly that run's messages and its sequences start at 1. A run's stream is made by its first publish, which
# deletes the streams of earlier runs. Direct gets are allowed, so each replica can be read on its own (session.py).
# Nothing is ever discarded: a message missing at the end was lost, not aged out (a full stream refuses publishes).
QUEUE_STREAM_PREFIX = "CHAOS_Q_"
QUEUE_SUBJECT_PREFIX = "chaosq."
QUEUE_CONFIG = {"allow_direct": True, "max_bytes": 256 * 1024 * 1024, "discard": "new"}
STREAM_NAME_IN_USE = 10058  # JetStream's err_code: "stream name already in use with a different configuration"


def queue_stream(run: str) -> tuple[str, str]:
    """The stream of one run's queue load, and its subject."""
    return QUEUE_STREAM_PREFIX + run, QUEUE_SUBJECT_PREFIX + run


def _config(stream: str) -> dict:
    if stream.startswith(QUEUE_STREAM_PREFIX):
        return {"subjects": [QUEUE_SUBJECT_PREFIX + stream.removeprefix(QUEUE_STREAM_PREFIX)], **QUEUE_CONFIG}
    return STREAMS[stream]


def describe(exc: BaseException) -> str:
    """A failed HTTP or NATS call in the words a violation uses."""
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        # Docker's port proxy accepts, then drops, connections to a member that is (re)starting or gone.
        return "unreachable (connection closed)"
    if isinstance(exc, nats.errors.NoServersError):
        return "no NATS server reachable"
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return "connection closed"
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return "no stream answered (it has no leader, or does not exist)"
    if isinstance(exc, nats.js.errors.APIError):
        return f"JetStream error {exc.err_code or exc.code}: {exc.description or type(exc).__name__}"[:200]
    return describe_http(exc)


async def quiet(*_args) -> None:
    """nats-py's default error callback logs every refused reconnect attempt: during a fault that is noise."""


class Connection:
    """The connection, opened lazily and reopened when nats-py gave up on it, and the streams it publishes to."""

    def __init__(self, client_urls: dict[str, str]):
        self.client_urls = client_urls
        self._nc: NatsClient | None = None
        self._connecting = asyncio.Lock()
        self._create_after: dict[str, float] = {}  # stream -> loop time before which it is not created again

    async def client(self, timeout: float) -> NatsClient:
        """The connection, opened lazily and reopened when nats-py gave up on it (closed)."""
        async with self._connecting:
            if self._nc is not None and not self._nc.is_closed:
                return self._nc
            nc = NatsClient()
            try:
                async with asyncio.timeout(timeout):
                    await nc.connect(
                        servers=list(self.client_urls.values()),  # shuffled by nats-py: sessions spread out
                        connect_timeout=max(0.2, min(2.0, timeout)),
                        # Fail over within a fraction of a second when the connected member dies (its port
                        # refuses at once), and give up after ~10 s of nothing answering: the next call reconnects.
                        reconnect_time_wait=0.2,
                        max_reconnect_attempts=15,
                        # A paused member keeps the TCP connection open but never answers: notice it in ~4-6 s.
                        ping_interval=2,
                        max_outstanding_pings=2,
                        error_cb=quiet, disconnected_cb=quiet, reconnected_cb=quiet, closed_cb=quiet,
                        name="durable-chaos",
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
            self._nc = nc
            return nc

    async def _create_stream(self, nc: NatsClient, stream: str, timeout: float) -> bool:
        """Create the stream; True if this call created it. The same config again is a no-op for the server, and
        a stream of that name with another config (made by hand, or by an older version) is left alone."""
        try:
            info = await nc.jsm(timeout=timeout).add_stream(name=stream, num_replicas=3, **_config(stream))
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == STREAM_NAME_IN_USE:
                return False
            raise
        return bool(info.did_create)

    async def publish(self, subject: str, payload: bytes, timeout: float, stream: str = STREAM,
                      headers: dict[str, str] | None = None) -> tuple[int, bool]:
        """An acknowledged publish to the stream, creating the stream when nothing stores the subject (the first
        publish on a new cluster, or after someone deleted it). Returns (sequence, whether this call created the
        stream). Raises on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        nc = await self.client(timeout)
        created = False
        try:
            ack = await nc.jetstream().publish(subject, payload, timeout=max(0.05, deadline - loop.time()),
                                               headers=headers)
        except nats.js.errors.NoStreamResponseError as refused:
            # Also what a stream without a leader answers: try creating it at most once a second, not on every
            # failed publish of every load client during a re-election.
            if loop.time() < self._create_after.get(stream, 0.0):
                raise
            self._create_after[stream] = loop.time() + 1.0
            try:
                created = await self._create_stream(nc, stream, max(0.05, deadline - loop.time()))
            except Exception:  # noqa: BLE001 - e.g. a member down: still nothing was published
                raise refused from None
            while True:
                try:
                    ack = await nc.jetstream().publish(subject, payload, timeout=max(0.05, deadline - loop.time()),
                                                       headers=headers)
                    break
                except nats.js.errors.NoStreamResponseError:
                    # A stream just made elects its leader in a few tens of milliseconds; until then nothing
                    # answers, and nothing was stored.
                    if not created or loop.time() + 0.05 >= deadline:
                        raise
                    await asyncio.sleep(0.05)
        if ack.stream != stream:
            raise RuntimeError(f"publish to {subject} acknowledged by stream {ack.stream!r}, not {stream}")
        return ack.seq, created

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await nc.close()
