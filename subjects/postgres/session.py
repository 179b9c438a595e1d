"""The postgres subject's session: the invariants from Patroni and a probe write on the primary, and the load's
reads and writes, each load client on whichever member is read-write now."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import psycopg

from durable_chaos.contracts import CheckResult, MemberHealth
from subjects.base import NotApplied, Reading, Session
from subjects.checks import ask_members, member_violations
from subjects.http import http_client
from subjects.postgres.patroni import health, leaders, member_trouble, replication, status
from subjects.postgres.sql import (
    KV_READ,
    KV_WRITE,
    PROBE_WRITE,
    SCHEMA,
    UNCERTAIN_SQLSTATES,
    connect,
    connect_leader,
    describe_sql,
    discard,
    guarded,
)


class PostgresSession(Session):
    model = "register"
    token_name = "txid"

    def __init__(self, api: dict[str, str], sql_ports: dict[str, int]):
        self.api = api  # service -> Patroni REST base URL
        self.sql_ports = sql_ports  # service -> PostgreSQL port on 127.0.0.1
        self.http = http_client()
        self._probe: tuple[str, psycopg.AsyncConnection] | None = None  # (leader it is open on, connection)
        self._load: dict[int, psycopg.AsyncConnection] = {}
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    async def _ensure_schema(self, conn: psycopg.AsyncConnection) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            for statement in SCHEMA:
                try:
                    await guarded(conn, conn.execute(statement))
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                    pass  # another session created it at the same moment (IF NOT EXISTS races in the catalog)
            self._schema_ready = True

    async def aclose(self) -> None:
        conns = list(self._load.values()) + ([self._probe[1]] if self._probe else [])
        self._load.clear()
        self._probe = None
        await asyncio.gather(*(discard(c) for c in conns))
        await self.http.aclose()

    async def _probe_write(self, leader: str, at: datetime, timeout: float) -> str:
        """'' when a write on the leader commits, else why not."""
        conn = None
        if self._probe and self._probe[0] == leader and not self._probe[1].closed:
            conn = self._probe[1]
        try:
            if conn is None:
                if self._probe:
                    await discard(self._probe[1])
                    self._probe = None
                conn = await connect(f"host=127.0.0.1 port={self.sql_ports[leader]}", timeout)
                self._probe = (leader, conn)
            async with asyncio.timeout(timeout):
                await self._ensure_schema(conn)
                await guarded(conn, conn.execute(PROBE_WRITE, (at,)))
            return ""
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if self._probe and self._probe[1] is conn:
                self._probe = None
            await discard(conn)
            if isinstance(exc, psycopg.errors.UndefinedTable):
                self._schema_ready = False
            return describe_sql(exc)
    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)
        # With `fail_fast`, a killed member (refused at once) alone breaks the steady state: no need to wait for the
        # others, nor to find out whether a leader is left.
        asked = await ask_members(at, (status(self.http, url, svc, timeout) for svc, url in self.api.items()),
                                  health, fail_fast)
        if isinstance(asked, CheckResult):  # failed fast
            return asked
        answers = {svc: (body, why) for svc, body, why in asked[0]}
        trouble = {svc: member_trouble(body, why) for svc, (body, why) in answers.items()}
        primaries = leaders(answers, trouble)
        violations: list[str] = []
        roles: dict[str, str] = {}
        if not primaries:
            violations.append("no leader")
        elif len(primaries) > 1:
            violations.append(f"more than one leader: {', '.join(primaries)}")
        else:
            leader = primaries[0]
            roles, lagging = replication(answers, trouble, leader)
            trouble |= lagging
            why = await self._probe_write(leader, at, timeout)
            if why:
                violations.append(f"write on the leader {leader} failed: {why}")

        members = [MemberHealth(service=svc, healthy=not trouble[svc], detail=trouble[svc]) for svc in answers]
        violations = member_violations(members) + violations
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
                        conn = await connect_leader(self.sql_ports, timeout)
                    except psycopg.OperationalError as exc:  # no primary to send it to: nothing was sent
                        raise NotApplied(describe_sql(exc)) from exc
                    self._load[client] = conn
                await self._ensure_schema(conn)
                return await guarded(conn, self._fetch(conn, statement, args))
        except BaseException as exc:
            if self._load.get(client) is conn:
                self._load.pop(client, None)
            await discard(conn)
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
