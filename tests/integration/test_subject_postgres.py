"""The postgres subject against a real Patroni + PostgreSQL 15 cluster (etcd as its store) in Docker: a healthy
cluster passes its check with the leader read from Patroni; killing the leader is seen at once by a fail-fast check,
a replica takes over within seconds and load follows it, and the restarted former leader rejoins as a replica; a
frozen member cannot make a check or a load transaction overrun its deadline."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import psycopg
import pytest_asyncio

from activities.docker import compose_client, open_session, service_container, validate_compose
from durable_chaos.runtime.copies import SubjectCopy
from subjects import SubjectInstance
from subjects.postgres import PASSWORD, POSTGRES, USER

from tests.conftest import private_copy, until

PORT_RANGE = (27000, 27990)


@pytest_asyncio.fixture(scope="module")
async def cluster():
    """A healthy private copy (own compose project and ports), removed by its project name whatever happens."""
    async with private_copy("postgres", PORT_RANGE) as copy:
        yield copy


async def _docker(copy: SubjectCopy, service: str, action: str) -> None:
    container = await asyncio.to_thread(service_container, copy.docker, copy.instance, service)
    await asyncio.to_thread({"kill": lambda: container.kill("KILL"), "start": container.start,
                             "pause": container.pause, "unpause": container.unpause}[action])


async def _sql(copy: SubjectCopy, service: str, query: str, params=()):
    port = POSTGRES.sql_ports(copy.instance.port_base)[service]
    async with await psycopg.AsyncConnection.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD,
                                                     dbname="postgres", connect_timeout=3) as conn:
        return await (await conn.execute(query, params)).fetchall()


async def append_and_read(session, client: int, seq: int, timeout: float) -> str:
    """One transaction appending `seq` to a key (`t<seq % 8>`) as load client `client`, and a read of it in the
    client's next one, which must end with it. Returns the key."""
    key = f"t{seq % 8}"
    assert await session.transact(client, [["append", key, seq]], timeout) == [["append", key, seq]]
    assert (await session.transact(client, [["r", key, None]], timeout))[0][2][-1] == seq
    return key


async def _list(copy: SubjectCopy, service: str, key: str) -> list[int] | None:
    rows = await _sql(copy, service, "SELECT vals FROM chaos_lists WHERE k = %s", (key,))
    return rows[0][0] if rows else None


def test_the_compose_file_is_valid_and_the_ports_do_not_overlap():
    instance = SubjectInstance(subject=POSTGRES, project="t-valid", port_base=26000)
    validate_compose(compose_client(instance), instance)  # raises if the shipped file is broken
    env = POSTGRES.compose_env(26000)
    ports = sorted(int(v) for k, v in env.items() if k.endswith("_PORT"))
    assert ports == list(range(26001, 26001 + POSTGRES.ports))
    assert set(POSTGRES.targets) < set(POSTGRES.services)
    assert POSTGRES.hints.quorum == "one"


async def test_a_healthy_cluster_passes_its_check_with_the_leader_from_patroni(cluster):
    async with open_session(cluster.instance) as session:
        result = await session.check(2.0)
        assert result.ok, result.violations
        assert {m.service for m in result.members} == set(POSTGRES.targets)
        assert set(result.roles) == {"leader"} and result.roles["leader"] in POSTGRES.targets
        assert await session.roles(2.0) == result.roles
        for seq in range(40):
            await append_and_read(session, seq % 4, seq, 2.0)

    # The role is Patroni's own: the member its DCS view names leader, and the one PostgreSQL says is primary.
    leader = result.roles["leader"]
    api = POSTGRES.api_endpoints(cluster.instance.port_base)
    async with httpx.AsyncClient(trust_env=False) as http:
        members = (await http.get(f"{api['pg1']}/cluster", timeout=2)).json()["members"]
    assert [m["name"] for m in members if m["role"] == "leader"] == [leader]
    assert await _sql(cluster, leader, "SELECT pg_is_in_recovery()") == [(False,)]
    # The load wrote through the leader (key t6 holds the seqs appended to it, in order).
    assert await _list(cluster, leader, "t6") == [6, 14, 22, 30, 38]


def _in_member(copy: SubjectCopy, service: str, script: str) -> str:
    container = service_container(copy.docker, copy.instance, service)
    return subprocess.run(["docker", "exec", container.id, "sh", "-c", script], capture_output=True, text=True,
                          timeout=30, check=True).stdout


async def test_patroni_keeps_its_timed_waits_and_only_postgresql_runs_under_libfaketime(cluster):
    """The clock-skew fault needs libfaketime under PostgreSQL; under Patroni (Python) it hangs every timed wait
    (libfaketime 0.9.10). Patroni then ran its loop only when etcd woke it, about every 8.5 s: a new leader lost its
    key each time, and a restarted former leader was started unrewound and stayed down (3 of 6 kill-and-rejoin runs
    in the image that preloaded it everywhere)."""
    # A timed wait with the member's environment, as Patroni's loop makes one each second, returns on time.
    waited = await asyncio.to_thread(_in_member, cluster, "pg1", "exec timeout 20 python3 -c 'import threading, time; "
                                     "t = time.monotonic(); threading.Event().wait(0.5); print(time.monotonic() - t)'")
    assert 0.4 < float(waited) < 3, waited
    # Patroni (pid 1) has no libfaketime mapped; the postmaster it started has.
    maps = await asyncio.to_thread(_in_member, cluster, "pg1", "grep -c faketime /proc/1/maps; "
                                   "grep -c faketime /proc/$(head -1 /var/lib/postgresql/patroni/postmaster.pid)/maps")
    patroni, postmaster = map(int, maps.split())
    assert patroni == 0 and postmaster > 0, maps


async def test_killing_the_leader_fails_over_and_the_old_leader_rejoins(cluster):
    async with open_session(cluster.instance) as checker, open_session(cluster.instance) as load:
        before = await checker.check(2.0)
        assert before.ok, before.violations
        victim = before.roles["leader"]
        await append_and_read(load, 0, 1000, 2.0)

        await _docker(cluster, victim, "kill")
        killed = time.monotonic()

        # Detection: the dead member refuses at once; a fail-fast check does not wait for anything else.
        began = time.monotonic()
        fast = await checker.check(5.0, fail_fast=True)
        assert time.monotonic() - began < 1.5
        assert f"{victim}: unreachable (connection refused)" in fast.violations, fast.violations

        # Failover: a replica promotes itself once the dead leader's key expires (ttl 8 s), and takes writes.
        async def new_leader():
            result = await checker.check(2.0)
            leader = result.roles.get("leader")
            wrote = not any(v.startswith("write on the leader") for v in result.violations)
            return leader if leader not in (None, victim) and wrote else None

        successor, _ = await until(20, new_leader)
        failover_s = time.monotonic() - killed
        print(f"\npostgres: {victim} killed, {successor} leads and takes writes after {failover_s:.2f} s")
        assert failover_s < 15

        # Load follows the failover: the same load client finds the new primary by itself.
        seq = iter(range(1001, 1_000_000))

        async def load_ok():
            try:
                n = next(seq)
                return await append_and_read(load, 0, n, 1.0), n
            except Exception:  # noqa: BLE001 - failures are expected until the client has found the new leader
                return None

        (key, written), _ = await until(10, load_ok)
        assert (await _list(cluster, successor, key))[-1] == written

        # Rejoin: the restarted former leader comes back as a replica (pg_rewind) and streams from the successor.
        await _docker(cluster, victim, "start")
        healed, rejoin_s = await until(90, lambda: _healthy(checker))
        print(f"postgres: {victim} restarted, cluster healthy again after {rejoin_s:.2f} s ({healed.roles})")
        assert healed.roles["leader"] == successor
        assert await _sql(cluster, victim, "SELECT pg_is_in_recovery()") == [(True,)]
        # What the successor acknowledged is on the rejoined member too.
        await until(10, lambda: _has(cluster, victim, key, written))


async def _has(copy: SubjectCopy, service: str, key: str, value: int) -> bool:
    return value in (await _list(copy, service, key) or [])


async def _healthy(session):
    result = await session.check(2.0)
    return result if result.ok else None


async def test_a_frozen_replica_cannot_make_checks_or_load_overrun_their_deadline(cluster):
    async with open_session(cluster.instance) as session:
        before = await until(60, lambda: _healthy(session))
        leader = before[0].roles["leader"]
        frozen = next(svc for svc in POSTGRES.targets if svc != leader)
        await _docker(cluster, frozen, "pause")
        try:
            began = time.monotonic()
            result = await session.check(1.0)
            assert time.monotonic() - began < 2.5
            assert f"{frozen}: no answer (timeout)" in result.violations, result.violations
            assert result.roles == {"leader": leader}

            # A load client with no connection yet still finds the leader: the members are tried at once, so the
            # frozen one (which accepts TCP and then says nothing) cannot eat the deadline.
            async with open_session(cluster.instance) as fresh:
                for seq in range(10):
                    began = time.monotonic()
                    await fresh.transact(seq, [["append", f"t{seq}", 2000 + seq]], 1.5)
                    assert time.monotonic() - began < 1.5
        finally:
            await _docker(cluster, frozen, "unpause")
        await until(60, lambda: _healthy(session))
