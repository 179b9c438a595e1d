"""SQL connections to the postgres subject's members: the statements the probe and the load run, and connecting,
guarding and dropping connections so that a deadline holds even against a frozen (paused) member."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

# Fixed test credentials, the same as in docker-compose.yaml.
USER, PASSWORD, DBNAME = "postgres", "chaos", "postgres"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chaos_probe (id integer PRIMARY KEY, at timestamptz NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chaos_lists (k text PRIMARY KEY, vals bigint[] NOT NULL)",
)
PROBE_WRITE = ("INSERT INTO chaos_probe (id, at) VALUES (1, %s) "
               "ON CONFLICT (id) DO UPDATE SET at = excluded.at")
# The list-append load: each transaction at the isolation level the subject promises (PostgreSQL's serializable
# snapshot isolation), an append as one upsert so that the first append to a key creates its row.
ISOLATION = "serializable"
TXN_BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE"
LIST_READ = "SELECT vals FROM chaos_lists WHERE k = %s"
LIST_APPEND = ("INSERT INTO chaos_lists (k, vals) VALUES (%s, ARRAY[%s::bigint]) "
               "ON CONFLICT (k) DO UPDATE SET vals = chaos_lists.vals || excluded.vals")
# SQLSTATE class of a transaction the server rolled back (serialization failure, deadlock): it did not commit.
ROLLED_BACK_SQLSTATE = "40"
# SQLSTATE classes where the server gave up on the connection, not on the statement: the commit may have happened.
UNCERTAIN_SQLSTATES = ("08", "57")


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



async def guarded(conn: psycopg.AsyncConnection, coro):
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



async def connect(conninfo: str, timeout: float) -> psycopg.AsyncConnection:
    # libpq's connect_timeout is at least 2 s; the deadline that counts is ours.
    async with asyncio.timeout(timeout):
        return await psycopg.AsyncConnection.connect(
            conninfo, user=USER, password=PASSWORD, dbname=DBNAME, autocommit=True,
            connect_timeout=max(2, int(timeout)), application_name="chaos")


async def connect_leader(sql_ports: dict[str, int], timeout: float) -> psycopg.AsyncConnection:
    """A connection to whichever member (service -> port on 127.0.0.1) is read-write now.

    What a libpq multi-host conninfo with `target_session_attrs=read-write` does, but trying the members at
    once rather than in turn: in turn, a frozen (paused) member ahead of the primary in the list eats the whole
    deadline, since libpq's connect_timeout is per host and at least 2 s."""
    async def attempt(port: int) -> psycopg.AsyncConnection:
        return await connect(f"host=127.0.0.1 port={port} target_session_attrs=read-write", timeout)

    tasks = {asyncio.create_task(attempt(port)): svc for svc, port in sql_ports.items()}
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
                await discard(result)
    if winner is None:
        whys = [f"{tasks[t]}: {describe_sql(t.exception())}" for t in tasks
                if t.done() and not t.cancelled() and t.exception() is not None]
        raise psycopg.OperationalError(f"no read-write member ({'; '.join(whys)})")
    return winner


async def discard(conn: psycopg.AsyncConnection | None) -> None:
    if conn is None:
        return
    with contextlib.suppress(psycopg.Error, OSError):
        conn.pgconn.finish()  # never waits on the server, even a frozen one
        await conn.close()
