"""clock-skew on real PostgreSQL members (Patroni + PostgreSQL under libfaketime), and its refusal on Go members.

The skew is read from the member's own PostgreSQL (`clock_timestamp()` through psql in the member) against this
host's clock, not from the file the fault writes; after undo the member's clock is the host's again. The cluster
stays healthy throughout (a shifted wall clock is not an outage). A cancelled and a terminated run put the clock
back. On etcd the fault is refused with exit 2 and one line: nothing is injected.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
import pytest_asyncio
from python_on_whales import docker

from activities.faults import member_targets
from durable_chaos.faults import make_fault
from durable_chaos.faults.clock import member_skew
from tests.conftest import private_copy, starter, subject_args
from tests.fault_checks import container_ids, events_since
from tests.integration import test_disk_faults as disk_faults
from tests.integration.test_disk_faults import held_then_ended
from tests.integration.test_fault_kinds import since_now

PORT_RANGE = (43000, 43990)
cli_env = disk_faults.cli_env  # the CLI's environment with a task queue of its own (a fixture)


@pytest_asyncio.fixture(scope="module")
async def postgres():
    async with private_copy("postgres", PORT_RANGE) as copy:
        yield copy


def pg_clock_skew(container_id: str) -> float | None:
    """Seconds PostgreSQL's own clock in the member is ahead of this host's; None while it does not answer."""
    before = time.time()
    proc = subprocess.run(["docker", "exec", "-u", "postgres", container_id, "psql", "-h", "/tmp", "-U", "postgres",
                           "-Atc", "select extract(epoch from clock_timestamp())"],
                          capture_output=True, text=True, timeout=60)
    return float(proc.stdout) - (before + time.time()) / 2 if proc.returncode == 0 else None


async def skew_settles(container_id: str, want: float, within_s: float = 60) -> float | None:
    """The member's skew once it is within a second of `want` (libfaketime re-reads its file once a second). A jump
    of the clock may make Patroni restart PostgreSQL meanwhile (a leader whose clock leapt past its lock's ttl
    demotes itself), so a member that does not answer is asked again."""
    deadline = time.monotonic() + within_s
    while True:
        skew = await asyncio.to_thread(pg_clock_skew, container_id)
        if (skew is not None and abs(skew - want) < 1) or time.monotonic() > deadline:
            return skew
        await asyncio.sleep(0.3)


async def test_a_members_clock_reading_is_not_biased_by_the_time_docker_exec_takes_to_start(postgres):
    """`docker exec` spends most of its time before the program runs, so the program reads the clock near the end of
    the call; taking the call's midpoint as the time of reading made a -45 s skew read -44.9 s on a busy host (CI51)."""
    assert (await postgres.wait_healthy()).ok
    member = (await container_ids(postgres))["pg2"]
    readings = sorted([await asyncio.to_thread(member_skew, member, None) for _ in range(5)])
    assert abs(readings[2]) < 0.025, readings


@pytest.mark.parametrize("offset", [45, -45])
async def test_clock_skew_shifts_a_postgres_members_own_clock_and_undo_puts_it_back(postgres, offset):
    assert (await postgres.wait_healthy()).ok
    member = (await container_ids(postgres))["pg2"]
    fault = make_fault("clock-skew", {"offset_s": offset})
    targets = await asyncio.to_thread(member_targets, postgres.instance, ["pg2"], "c10c0001")
    assert fault.refuse(targets) is None
    [t] = targets
    assert abs(await skew_settles(member, 0) or 99) < 1
    try:
        assert fault.inject(t) is True and fault.inject(t) is False
        injected_at = time.monotonic()
        during = await skew_settles(member, offset)
        took = time.monotonic() - injected_at
        evidence = fault.evidence_of_effect(t)
        signs = type(fault).member_signs(docker.container.inspect(member))
        healthy_during = (await postgres.check()).ok
    finally:
        undone = fault.undo(t)
    assert undone is True and fault.undo(t) is False and not fault.in_effect(t)
    after = await skew_settles(member, 0)
    logs = subprocess.run(["docker", "logs", "--since", "2m", member], capture_output=True, text=True).stderr
    print("pg2 Patroni on the jumps:", [line[-120:] for line in logs.splitlines() if "demot" in line.lower()][-3:])
    print(f"pg2 clock-skew {offset:+d} s: PostgreSQL's clock_timestamp() read {during:+.2f} s from the host's "
          f"({took:.1f} s after inject), {after:+.2f} s after undo; evidence: {evidence}")
    assert during is not None and abs(during - offset) < 1, during
    assert after is not None and abs(after) < 1, after
    # The evidence states the offset it read, to a tenth of a second (a reading of -44.9 s is a -45 s skew).
    assert evidence and abs(float(evidence.split("reads ")[1].split(" s ")[0]) - offset) < 0.5, evidence
    assert signs == [f"wall clock shifted {offset:+d} s by libfaketime (/etc/chaos-clock-offset)"], signs
    assert healthy_during  # a member with a wrong clock still serves
    assert (await postgres.wait_healthy()).ok


@pytest.mark.parametrize("how", ["cancel", "terminate"])
async def test_a_cancelled_or_terminated_run_puts_the_clock_back(client, task_queue, postgres, how):
    assert (await postgres.wait_healthy()).ok
    member = (await container_ids(postgres))["pg3"]
    await held_then_ended(client, task_queue, postgres, how, "pg3", lambda: abs((pg_clock_skew(member) or 0) - 60) < 2,
                          fault="clock-skew", fault_params={"offset_s": 60})
    assert abs(await skew_settles(member, 0) or 99) < 1
    assert (await postgres.wait_healthy()).ok


async def test_clock_skew_on_etcd_exits_2_with_one_line_and_touches_nothing(cli_env, postgres):
    # The postgres copy's etcd members are no targets (Patroni's store): the etcd subject gets a copy of its own.
    async with private_copy("etcd", PORT_RANGE) as etcd:
        since = since_now()
        proc = await asyncio.to_thread(starter, "chaos", "--fault", "clock-skew", "--target", "etcd2",
                                       "--countdown", "0", *subject_args(etcd), env=cli_env)
        assert (await events_since(etcd, since)) == []
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: clock-skew: etcd2 runs etcd, which its subject does not run under libfaketime (Go "
                      "programs such as etcd and NATS read the clock through the vDSO, out of its reach); nothing "
                      "was injected"], proc.stderr
    assert "Traceback" not in proc.stderr


async def test_an_offset_out_of_range_exits_2_with_one_line(cli_env, postgres):
    proc = await asyncio.to_thread(starter, "chaos", "--subject", "postgres", "--fault", "clock-skew", "-p",
                                   "offset_s=100000", "--countdown", "0", *subject_args(postgres), env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: fault clock-skew: offset_s=100000 is invalid: Input should be less than or equal to 86400"], proc.stderr
