"""Detection checks against a real etcd member: a fail-fast check reports a dead member at once, even while
another member hangs (as the survivors of a killed leader do during re-election)."""

from __future__ import annotations

import asyncio
import time

from subjects.etcd import EtcdSession
from tests.conftest import free_port

PORT_RANGE = (28000, 28990)




async def _hanging_member():
    """Accepts connections and never answers."""
    async def hold(reader, writer):
        await reader.read()  # until the client gives up

    return await asyncio.start_server(hold, "127.0.0.1", 0)


async def test_fail_fast_check_reports_a_dead_member_without_waiting_for_a_hanging_one(etcd):
    real = etcd.instance.subject.endpoints(etcd.instance.port_base)
    server = await _hanging_member()
    hanging = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    # A free port: nothing listens there, so connections are refused.
    endpoints = {"etcd1": hanging, "etcd2": real["etcd2"], "etcd3": f"http://127.0.0.1:{free_port()}"}
    timeout = 5.0
    try:
        async with EtcdSession(endpoints) as session:
            began = time.monotonic()
            fast = await session.check(timeout, fail_fast=True)
            fast_s = time.monotonic() - began
            began = time.monotonic()
            full = await session.check(timeout)
            full_s = time.monotonic() - began
    finally:
        server.close()
    assert not fast.ok
    assert fast.violations == ["etcd3: unreachable (connection refused)"], fast.violations
    assert fast_s < timeout / 2, fast_s
    # The full check waits for every member and reports all of them.
    assert not full.ok
    assert full_s >= timeout * 0.9, full_s
    assert {m.service: m.healthy for m in full.members} == {"etcd1": False, "etcd2": True, "etcd3": False}
    assert "etcd1: no answer (timeout)" in full.violations


async def test_fail_fast_check_of_a_healthy_cluster_is_the_full_check(etcd):
    async with EtcdSession(etcd.instance.subject.endpoints(etcd.instance.port_base)) as session:
        result = await session.check(1.0, fail_fast=True)
        roles = await session.roles(1.0)
    assert result.ok, result.violations
    assert [m.service for m in result.members] == ["etcd1", "etcd2", "etcd3"]
    # The leader is read from etcd itself: the member every member's status names.
    assert result.roles["leader"] in etcd.instance.subject.services and roles == result.roles
