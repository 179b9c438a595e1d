"""The postgres subject: PostgreSQL 15 on three members run by Patroni 3.0.2, with a 3-member etcd as its store.

Roles come from Patroni itself (`GET /patroni` on every member); SQL goes through psycopg (v3, async). Load
clients connect as a real application does, with `target_session_attrs=read-write` over every member, so each one
finds the current primary and follows a failover by reconnecting after an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psycopg

from durable_chaos.contracts import CheckResult, MemberHealth, SubjectDefaults
from subjects.base import (
    DiagnosisHints,
    FromDebian,
    ImageSpec,
    Members,
    NotApplied,
    Reading,
    Session,
    Subject,
    SubjectInstance,
    local_or_upstream,
)
from subjects.etcd import etcd_image
from subjects.http import describe, http_client

LOCAL_IMAGE = "chaos-patroni:3.0.2-pg15"
IMAGE_ENV = "PATRONI_IMAGE"  # any image with `patroni`, a `postgres` user and PostgreSQL 15 (see the compose file)
# Debian bookworm's packages: patroni 3.0.2 (it talks to etcd v3 through etcd's JSON gateway, `etcd3:` in its
# configuration, with python3-etcd for the shared etcd code) and PostgreSQL 15. Patroni's configuration lives in
# the compose file, so the image needs no layer of its own.
RECIPE = FromDebian(packages=("patroni", "python3-etcd", "postgresql-15"))

PG_SERVICES = ("pg1", "pg2", "pg3")
# Patroni 3.0.2 calls the primary "master" (later versions say "primary"); both mean the role we call "leader".
PRIMARY_ROLES = ("master", "primary")
# A replica further behind the leader than this (replayed WAL) is a violation: replication is not keeping up.
MAX_LAG_BYTES = 16 * 1024 * 1024
# Fixed test credentials, the same as in docker-compose.yaml.
USER, PASSWORD, DBNAME = "postgres", "chaos", "postgres"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chaos_kv (k text PRIMARY KEY, v text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chaos_probe (id integer PRIMARY KEY, at timestamptz NOT NULL)",
)
PROBE_WRITE = ("INSERT INTO chaos_probe (id, at) VALUES (1, %s) "
               "ON CONFLICT (id) DO UPDATE SET at = excluded.at")
# The token is the row version's xmin: the id of the transaction that wrote it (the write's own, and what a read of
# the value reports). A new primary that lost acknowledged transactions hands their ids out again.
KV_WRITE = ("INSERT INTO chaos_kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v "
            "RETURNING xmin::text::bigint")
KV_READ = "SELECT v, xmin::text::bigint FROM chaos_kv WHERE k = %s"
# SQLSTATE classes where the server gave up on the connection, not on the statement: the commit may have happened.
UNCERTAIN_SQLSTATES = ("08", "57")


def patroni_image() -> ImageSpec:
    return local_or_upstream(LOCAL_IMAGE, RECIPE, IMAGE_ENV)


def describe_sql(exc: BaseException) -> str:
    """A failed SQL call in the words a violation uses (libpq's messages are long and multi-line)."""
    text = str(exc)
    if isinstance(exc, (TimeoutError, psycopg.errors.ConnectionTimeout)) or "timeout expired" in text:
        return "no answer (timeout)"
    if "Connection refused" in text:
        return "unreachable (connection refused)"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction) or "read-only" in text:
        return "read-only (not the primary)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:200]


def _lsn(value) -> int | None:
    return value if isinstance(value, int) else None


async def _guarded(conn: psycopg.AsyncConnection, coro):
    """Await one statement so that a deadline around it holds even against a frozen server.

    A cancelled psycopg query sends the server a cancel request and waits for it (up to 10 s), which a paused
    member never answers; closing the socket first lets the cancelled statement finish at once."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        conn.pgconn.finish()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise


class PostgresSession(Session):
    operations = True
    token_name = "txid"

    def __init__(self, api: dict[str, str], sql_ports: dict[str, int]):
        self.api = api  # service -> Patroni REST base URL
        self.sql_ports = sql_ports  # service -> PostgreSQL port on 127.0.0.1
        self.http = http_client()
        self._probe: tuple[str, psycopg.AsyncConnection] | None = None  # (leader it is open on, connection)
        self._load: dict[int, psycopg.AsyncConnection] = {}
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    # -- connections -------------------------------------------------------------------------------------------

    @staticmethod
    async def _connect(conninfo: str, timeout: float) -> psycopg.AsyncConnection:
        # libpq's connect_timeout is at least 2 s; the deadline that counts is ours.
        async with asyncio.timeout(timeout):
            return await psycopg.AsyncConnection.connect(
                conninfo, user=USER, password=PASSWORD, dbname=DBNAME, autocommit=True,
                connect_timeout=max(2, int(timeout)), application_name="chaos")

    async def _connect_leader(self, timeout: float) -> psycopg.AsyncConnection:
        """A connection to whichever member is read-write now.

        What a libpq multi-host conninfo with `target_session_attrs=read-write` does, but trying the members at
        once rather than in turn: in turn, a frozen (paused) member ahead of the primary in the list eats the whole
        deadline, since libpq's connect_timeout is per host and at least 2 s."""
        async def attempt(port: int) -> psycopg.AsyncConnection:
            return await self._connect(f"host=127.0.0.1 port={port} target_session_attrs=read-write", timeout)

        tasks = {asyncio.create_task(attempt(port)): svc for svc, port in self.sql_ports.items()}
        winner = None
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    winner = await next_done
                    break
                except (psycopg.Error, OSError, TimeoutError):
                    continue  # refused, read-only or frozen: the others may still answer
        finally:
            for t in tasks:
                t.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, psycopg.AsyncConnection) and result is not winner:
                    await self._discard(result)
        if winner is None:
            whys = [f"{tasks[t]}: {describe_sql(t.exception())}" for t in tasks
                    if t.done() and not t.cancelled() and t.exception() is not None]
            raise psycopg.OperationalError(f"no read-write member ({'; '.join(whys)})")
        return winner

    async def _ensure_schema(self, conn: psycopg.AsyncConnection) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            for statement in SCHEMA:
                try:
                    await _guarded(conn, conn.execute(statement))
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                    pass  # another session created it at the same moment (IF NOT EXISTS races in the catalog)
            self._schema_ready = True

    @staticmethod
    async def _discard(conn: psycopg.AsyncConnection | None) -> None:
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error, OSError):
            conn.pgconn.finish()  # never waits on the server, even a frozen one
            await conn.close()

    async def aclose(self) -> None:
        conns = list(self._load.values()) + ([self._probe[1]] if self._probe else [])
        self._load.clear()
        self._probe = None
        await asyncio.gather(*(self._discard(c) for c in conns))
        await self.http.aclose()

    # -- invariants --------------------------------------------------------------------------------------------

    async def _status(self, svc: str, timeout: float) -> tuple[str, dict | None, str]:
        """(service, Patroni's /patroni answer or None, why not)."""
        try:
            r = await self.http.get(f"{self.api[svc]}/patroni", timeout=timeout)
            body = r.json()
            if not isinstance(body, dict):
                return svc, None, f"unexpected answer (HTTP {r.status_code})"
            return svc, body, ""
        except (httpx.HTTPError, ValueError) as exc:
            return svc, None, describe(exc)

    @staticmethod
    def _member_trouble(body: dict | None, why: str) -> str:
        if body is None:
            return why
        state = body.get("state")
        if state != "running":
            return f"PostgreSQL {state or 'state unknown'}"
        return ""

    async def _probe_write(self, leader: str, at: datetime, timeout: float) -> str:
        """'' when a write on the leader commits, else why not."""
        conn = None
        if self._probe and self._probe[0] == leader and not self._probe[1].closed:
            conn = self._probe[1]
        try:
            if conn is None:
                if self._probe:
                    await self._discard(self._probe[1])
                    self._probe = None
                conn = await self._connect(f"host=127.0.0.1 port={self.sql_ports[leader]}", timeout)
                self._probe = (leader, conn)
            async with asyncio.timeout(timeout):
                await self._ensure_schema(conn)
                await _guarded(conn, conn.execute(PROBE_WRITE, (at,)))
            return ""
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if self._probe and self._probe[1] is conn:
                self._probe = None
            await self._discard(conn)
            if isinstance(exc, psycopg.errors.UndefinedTable):
                self._schema_ready = False
            return describe_sql(exc)

    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)
        tasks = [asyncio.create_task(self._status(svc, timeout)) for svc in self.api]
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if fail_fast and any(self._member_trouble(body, why) for _, body, why in (t.result() for t in done)):
                # A killed member refuses at once: that alone breaks the steady state, no need to wait for the
                # others (nor to find out whether a leader is left).
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                members = []
                for t in tasks:
                    if t.cancelled():
                        continue
                    svc, body, why = t.result()
                    trouble = self._member_trouble(body, why)
                    members.append(MemberHealth(service=svc, healthy=not trouble, detail=trouble))
                return CheckResult(at=at, ok=False, members=members,
                                   violations=[f"{m.service}: {m.detail}" for m in members if not m.healthy])
        answers = {svc: (body, why) for svc, body, why in (t.result() for t in tasks)}

        trouble = {svc: self._member_trouble(body, why) for svc, (body, why) in answers.items()}
        leaders = [svc for svc, (body, _) in answers.items()
                   if body and not trouble[svc] and body.get("role") in PRIMARY_ROLES]
        violations: list[str] = []
        roles: dict[str, str] = {}
        if not leaders:
            violations.append("no leader")
        elif len(leaders) > 1:
            violations.append(f"more than one leader: {', '.join(leaders)}")
        else:
            leader = leaders[0]
            roles["leader"] = leader
            lbody = answers[leader][0]
            streams = {r.get("application_name"): r for r in lbody.get("replication") or []}
            leader_lsn = _lsn((lbody.get("xlog") or {}).get("location"))
            for svc, (body, _) in answers.items():
                if svc == leader or trouble[svc]:
                    continue
                stream = streams.get(svc)
                if stream is None or stream.get("state") != "streaming":
                    state = stream.get("state") if stream else "not connected"
                    trouble[svc] = f"not streaming from the leader {leader} ({state})"
                    continue
                if stream.get("sync_state") in ("sync", "quorum"):
                    roles.setdefault("sync_standby", svc)
                replayed = _lsn((body.get("xlog") or {}).get("replayed_location"))
                if leader_lsn is not None and replayed is not None and leader_lsn - replayed > MAX_LAG_BYTES:
                    trouble[svc] = f"{(leader_lsn - replayed) / 2**20:.0f} MB behind the leader {leader}"
            why = await self._probe_write(leader, at, timeout)
            if why:
                violations.append(f"write on the leader {leader} failed: {why}")

        members = [MemberHealth(service=svc, healthy=not trouble[svc], detail=trouble[svc]) for svc in answers]
        violations = [f"{m.service}: {m.detail}" for m in members if not m.healthy] + violations
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations)

    # -- load --------------------------------------------------------------------------------------------------

    async def _execute(self, client: int, statement: str, args: tuple, timeout: float) -> tuple | None:
        # One connection per load client, opened on whichever member is read-write now; after any error it is
        # dropped and the next operation looks for the primary again (that is how a failover is followed).
        conn = self._load.get(client)
        try:
            async with asyncio.timeout(timeout):
                if conn is None or conn.closed:
                    try:
                        conn = await self._connect_leader(timeout)
                    except psycopg.OperationalError as exc:  # no primary to send it to: nothing was sent
                        raise NotApplied(describe_sql(exc)) from exc
                    self._load[client] = conn
                await self._ensure_schema(conn)
                return await _guarded(conn, self._fetch(conn, statement, args))
        except BaseException as exc:
            if self._load.get(client) is conn:
                self._load.pop(client, None)
            await self._discard(conn)
            if isinstance(exc, psycopg.errors.UndefinedTable):
                self._schema_ready = False
            state = getattr(exc, "sqlstate", None)
            if state and not state.startswith(UNCERTAIN_SQLSTATES):
                # The server refused the statement (read-only, constraint...): in autocommit it was rolled back.
                raise NotApplied(describe_sql(exc)) from exc
            raise

    @staticmethod
    async def _fetch(conn: psycopg.AsyncConnection, statement: str, args: tuple) -> tuple | None:
        return await (await conn.execute(statement, args)).fetchone()

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        return (await self._execute(client, KV_WRITE, (key, value), timeout))[0]

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        # On the primary (the load's connections are read-write): a replica could lag behind.
        row = await self._execute(client, KV_READ, (key,), timeout)
        return Reading(*row) if row else Reading(None)


class Postgres(Subject):
    name = "postgres"
    folder = Path(__file__).parent
    services = ("etcd1", "etcd2", "etcd3", *PG_SERVICES)
    targets = PG_SERVICES
    default_project = "chaos-postgres"
    default_port_base = 23820
    ports = 6  # Patroni REST of pg1..3 on base+1..3, PostgreSQL of pg1..3 on base+4..6
    primary_role = "leader"
    hints = DiagnosisHints(
        quorum="one",
        log_markers=(
            # Patroni's "LEVEL: message" and PostgreSQL's "LEVEL:  message" lines.
            r"\b(?:WARNING|ERROR|CRITICAL|FATAL|PANIC):",
            r"promoted self to leader|demot(?:ed|ing) self|lost the leader lock|Lock owner: None",
            r"running pg_rewind|pg_rewind|reinitializ|removing data directory",
            r"database system was (?:interrupted|not properly shut down)|crash recovery",
            r"could not (?:connect to|receive data from) (?:the primary|WAL stream)|terminating walreceiver",
            r"Failed to get list of machines|Request to etcd failed|etcd.*(?:timed out|unreachable)",
        ),
        prompt_notes=(
            "PostgreSQL here is one primary (Patroni role 'leader', Patroni 3.0.2 says 'master') with two "
            "asynchronous streaming replicas; Patroni holds the leader key in etcd (ttl 8 s, loop_wait 1 s). When the "
            "primary dies, the replicas keep running read-only and there is no leader and no write for up to ~8 s "
            "until its key expires; then the most advanced replica promotes itself (new timeline) and the other one "
            "follows it. Replicas reported 'not streaming' or a cluster with 'no leader' during that window are "
            "victims, not the fault. A restarted former primary rejoins as a replica (pg_rewind) after a few "
            "seconds. The etcd members are Patroni's store, not targets: if etcd loses its majority, the primary "
            "demotes itself and no member is leader although every PostgreSQL process is up. Known bug of this "
            "Patroni (3.0.2, fixed in 3.0.3): a primary that was frozen (paused) past its key's expiry can take the "
            "key back when it resumes; then two members briefly claim leadership, the newer primary is rewound and "
            "the writes it acknowledged meanwhile are lost."
        ),
    )
    # A killed member is refused at once and a frozen one times out a check; failover of a killed leader takes
    # 7-9 s and a restarted former leader is streaming again 5-7 s after `docker start` (measured), so restore
    # has ample margin even on a busy host or when pg_rewind fails and a fresh copy is taken.
    defaults = SubjectDefaults(detect_timeout_s=30.0, restore_timeout_s=60.0)

    def api_endpoints(self, port_base: int) -> dict[str, str]:
        return {svc: f"http://127.0.0.1:{port_base + i}" for i, svc in enumerate(PG_SERVICES, start=1)}

    def sql_ports(self, port_base: int) -> dict[str, int]:
        return {svc: port_base + len(PG_SERVICES) + i for i, svc in enumerate(PG_SERVICES, start=1)}

    def compose_env(self, port_base: int) -> dict[str, str]:
        env = {f"{svc.upper()}_API_PORT": url.rsplit(":", 1)[1] for svc, url in self.api_endpoints(port_base).items()}
        env |= {f"{svc.upper()}_SQL_PORT": str(port) for svc, port in self.sql_ports(port_base).items()}
        return env

    def images(self) -> list[ImageSpec]:
        return [etcd_image(), patroni_image()]

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return PostgresSession(self.api_endpoints(instance.port_base), self.sql_ports(instance.port_base))


POSTGRES = Postgres()
