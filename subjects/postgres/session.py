"""The postgres subject's session: the invariants from Patroni and a probe write on the primary, and the load's
list-append transactions, each load client on whichever member is read-write now."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import psycopg
from psycopg import pq

from durable_chaos.contracts import CheckResult, MemberHealth
from subjects.base import NotApplied, Session
from subjects.checks import ask_members, member_violations
from subjects.http import http_client
from subjects.postgres.patroni import health, leaders, member_trouble, replication, status
from subjects.postgres.sql import (
    ISOLATION,
    LIST_APPEND,
    LIST_READ,
    PROBE_WRITE,
    ROLLED_BACK_SQLSTATE,
    SCHEMA,
    TXN_BEGIN,
    UNCERTAIN_SQLSTATES,
    connect,
    connect_leader,
    describe_sql,
    discard,
    guarded,
)


class PostgresSession(Session):
    model = "list-append"
    isolation = ISOLATION

    def __init__(self, api: dict[str, str], sql_ports: dict[str, int]):
        self.api = api  # service -> Patroni REST base URL
        self.sql_ports = sql_ports  # service -> PostgreSQL port on 127.0.0.1
        self.http = http_client()
        self._probe: tuple[str, psycopg.AsyncConnection] | None = None  # (leader it is open on, connection)
        self._load: dict[int, psycopg.AsyncConnection] = {}
        self._turns: dict[int, asyncio.Lock] = {}  # load client -> held while it runs an operation
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
        latency = asked[2]
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
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations,
                           latency_ms=latency)

    # -- load --------------------------------------------------------------------------------------------------

    async def _on_primary(self, client: int, work, timeout: float):
        """`work(conn)` on load client `client`'s connection. One connection per load client, opened on whichever
        member is read-write now; after an error it is dropped and the next operation looks for the primary again
        (that is how a failover is followed), unless the server rolled back a transaction and the connection is idle
        and fine (`work` raised `NotApplied`).

        A client runs one transaction at a time: the load may hand a client its next operation while its last one is
        still running (a slow answer), and two transactions on one connection would mix (the second's statements run
        inside the first, and the first's COMMIT commits them), so the next one waits its turn."""
        deadline = asyncio.get_running_loop().time() + timeout
        turn = self._turns.setdefault(client, asyncio.Lock())
        try:
            async with asyncio.timeout_at(deadline):
                await turn.acquire()
        except TimeoutError as exc:
            raise NotApplied("no answer (timeout): the client's last operation was still running") from exc
        try:
            return await self._on_connection(client, work, deadline)
        finally:
            turn.release()

    async def _on_connection(self, client: int, work, deadline: float):
        conn = self._load.get(client)
        try:
            async with asyncio.timeout_at(deadline):
                if conn is None or conn.closed:
                    try:
                        conn = await connect_leader(self.sql_ports, deadline - asyncio.get_running_loop().time())
                    except psycopg.OperationalError as exc:  # no primary to send it to: nothing was sent
                        raise NotApplied(describe_sql(exc)) from exc
                    self._load[client] = conn
                await self._ensure_schema(conn)
                return await guarded(conn, work(conn))
        except BaseException as exc:
            if isinstance(exc, NotApplied) and conn is not None and not conn.closed and \
                    conn.info.transaction_status == pq.TransactionStatus.IDLE:
                raise
            if self._load.get(client) is conn:
                self._load.pop(client, None)
            await discard(conn)
            if isinstance(exc, psycopg.errors.UndefinedTable):
                self._schema_ready = False
            state = getattr(exc, "sqlstate", None)
            if state and not state.startswith(UNCERTAIN_SQLSTATES):
                # The server refused a statement (read-only, constraint...): its transaction did not commit.
                raise NotApplied(describe_sql(exc)) from exc
            raise

    async def transact(self, client: int, micro_ops: list[list], timeout: float) -> list[list]:
        """The micro-operations in one serializable transaction on the primary. A transaction the server rolled
        back (a serialization failure, a deadlock) did not commit; neither did one whose connection was lost before
        COMMIT was sent (the server rolls back what its client left open). A connection lost during COMMIT leaves
        the outcome unknown."""
        committing = False

        async def run(conn: psycopg.AsyncConnection) -> list[list]:
            nonlocal committing
            try:
                await conn.execute(TXN_BEGIN)
                done = []
                for f, key, value in micro_ops:
                    if f == "append":
                        await conn.execute(LIST_APPEND, (key, value))
                    else:
                        row = await (await conn.execute(LIST_READ, (key,))).fetchone()
                        value = row[0] if row else None
                    done.append([f, key, value])
                committing = True
                await conn.execute("COMMIT")
                return done
            except psycopg.Error as exc:
                if not (exc.sqlstate or "").startswith(ROLLED_BACK_SQLSTATE):
                    raise
                if not committing:  # a failed COMMIT ends the transaction itself
                    await conn.execute("ROLLBACK")
                raise NotApplied(describe_sql(exc)) from exc

        try:
            return await self._on_primary(client, run, timeout)
        except Exception as exc:
            if committing or isinstance(exc, NotApplied):
                raise
            raise NotApplied(describe_sql(exc)) from exc
