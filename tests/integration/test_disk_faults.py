"""Disk faults on real members: disk-slow throttles an etcd member's data disk in its own cgroup.

The effect is measured from outside the product's code: the throttle read from the member's cgroup files under
/sys/fs/cgroup, and etcd's own WAL fsync latency (its /metrics histogram) while we write through it. After undo
the cgroup holds no limit and the latency is back. A cancelled run and a terminated one leave no limit either (the
run's compensation, and the fault guard, restore). Bad input is refused by the CLI with exit 2 and one line.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path

import httpx
import pytest
from python_on_whales import docker
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import is_cancelled_exception

from activities.faults import member_targets
from durable_chaos.contracts import FaultState, GuardReport
from durable_chaos.faults import make_fault
from durable_chaos.ids import fault_guard_id
from tests.conftest import private_copy, running_worker, starter, subject_args
from tests.fault_checks import container_ids, events_since
from tests.integration import test_fault_kinds as fault_kinds
from tests.integration.test_fault_kinds import NO_ROLES, held_run, since_now

PORT_RANGE = (43000, 43990)
THROTTLE = {"write_iops": 10}


def limits_from_kernel(container_id: str) -> list[str]:
    """Every block I/O limit in the member's cgroup, read from the kernel's files (v1 blkio or v2 io.max)."""
    pid = docker.container.inspect(container_id).state.pid
    if not pid:
        return []
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    paths = {ctl: p for _, ctls, p in (line.split(":", 2) for line in lines) for ctl in ctls.split(",")}
    if "blkio" in paths:
        d = Path("/sys/fs/cgroup/blkio") / paths["blkio"].lstrip("/")
        return [f"{f.name} {line}" for f in sorted(d.glob("blkio.throttle.*_device"))
                for line in f.read_text().splitlines() if not line.endswith(" 0")]
    d = Path("/sys/fs/cgroup") / paths[""].lstrip("/")
    return [line for line in (d / "io.max").read_text().splitlines()
            if any(not p.endswith("=max") for p in line.split()[1:])]


def fsync_totals(port: int) -> tuple[float, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = float(re.search(r"^etcd_disk_wal_fsync_duration_seconds_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^etcd_disk_wal_fsync_duration_seconds_count (\S+)", text, re.M).group(1))
    return total, count


def mean_fsync_ms(port: int, writes: int = 20) -> float:
    """etcd's own mean WAL fsync time over `writes` puts sent to the member (each is fsynced by every member)."""
    s0, c0 = fsync_totals(port)
    for i in range(writes):
        key, value = base64.b64encode(f"disk-{i}".encode()).decode(), base64.b64encode(b"x" * 100).decode()
        httpx.post(f"http://127.0.0.1:{port}/v3/kv/put", json={"key": key, "value": value}, timeout=60)
    s1, c1 = fsync_totals(port)
    assert c1 > c0, "no fsync happened: the writes did not reach the member's WAL"
    return (s1 - s0) / (c1 - c0) * 1000


def port_of(etcd, service: str) -> int:
    return etcd.instance.port_base + etcd.instance.subject.services.index(service) + 1


async def test_disk_slow_raises_an_etcd_members_fsync_latency_and_undo_lifts_it(etcd):
    assert (await etcd.wait_healthy()).ok
    member = (await container_ids(etcd))["etcd2"]
    port = port_of(etcd, "etcd2")
    fault = make_fault("disk-slow", THROTTLE)
    [t] = await asyncio.to_thread(member_targets, etcd.instance, ["etcd2"], "d15c0001")
    assert fault.refuse([t]) is None
    before = await asyncio.to_thread(mean_fsync_ms, port)
    assert limits_from_kernel(member) == []
    try:
        assert fault.inject(t) is True and fault.inject(t) is False  # a second inject finds it in place
        on = limits_from_kernel(member)
        assert any(re.search(r"write_iops_device \d+:\d+ 10$|wiops=10", line) for line in on), on
        during = await asyncio.to_thread(mean_fsync_ms, port)
        evidence = fault.evidence_of_effect(t)
        signs = type(fault).member_signs(docker.container.inspect(member))
    finally:
        undone = fault.undo(t)
    assert undone is True and fault.undo(t) is False
    assert limits_from_kernel(member) == []
    after = await asyncio.to_thread(mean_fsync_ms, port)
    print(f"etcd2 WAL fsync mean: {before:.2f} ms before, {during:.1f} ms under {fault.label()}, "
          f"{after:.2f} ms after; evidence: {evidence}")
    # 10 writes a second and a fsync that needs at least one: never under 50 ms however quiet the disk.
    assert during > 50 and during > 10 * before, (before, during)
    assert after < during / 5, (during, after)
    assert evidence and "etcd2" in evidence and "from its cgroup" in evidence
    assert signs and "wiops=10" in signs[0], signs
    assert not list(Path(t.container.graph_driver.data["UpperDir"]).parent.glob(".chaos-probe-*"))


async def test_a_restarted_member_has_no_limit_left_and_undo_says_so(etcd):
    fault = make_fault("disk-slow", THROTTLE)
    [t] = await asyncio.to_thread(member_targets, etcd.instance, ["etcd3"], "d15c0002")
    assert fault.inject(t) is True
    docker.container.restart(t.container.id, time=5)
    [t] = await asyncio.to_thread(member_targets, etcd.instance, ["etcd3"], "d15c0002")
    assert fault.in_effect(t) is False and fault.undo(t) is False  # its new cgroup came without the limit
    assert limits_from_kernel(t.container.id) == []
    assert (await etcd.wait_healthy()).ok


async def held_then_ended(client, task_queue: str, copy, how: str, target: str, on, **kw) -> GuardReport:
    """Hold a run before detect with its fault on `target` (`on()` says it is there, within a few seconds: a clock
    offset takes up to one to be read), then cancel it (its own compensation restores) or terminate it (only its
    guard can); returns the guard's report once the guard closed."""
    async with running_worker(client, task_queue):
        async with held_run(client, task_queue, copy, target=target, **kw) as handle:
            deadline = time.monotonic() + 5
            while not await asyncio.to_thread(on):
                assert time.monotonic() < deadline, "the run held before detect with its fault not in place"
                await asyncio.sleep(0.3)
            if how == "cancel":
                await handle.cancel()
                # The compensation runs shielded from the cancellation, then the cancellation goes through.
                with pytest.raises(WorkflowFailureError) as err:
                    await asyncio.wait_for(handle.result(), 120)
                assert is_cancelled_exception(err.value.cause), err.value.cause
            else:
                await handle.terminate(reason="simulating an operator's terminate")
        ended_at = time.monotonic()
        guard = client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id), result_type=GuardReport)
        report = await asyncio.wait_for(guard.result(), 90)
    print(f"{kw['fault']}, run {how}: guard {report.run_status} {report.fault_state} {report.action}, closed "
          f"{time.monotonic() - ended_at:.1f} s after")
    if how == "cancel":
        assert (report.run_status, report.fault_state, report.action) == ("CANCELED", FaultState.RESTORED, None)
    else:
        assert (report.run_status, report.fault_state) == ("TERMINATED", FaultState.INJECTED), report
        assert report.action.action == "restored" and report.action.target == target, report
    return report


@pytest.mark.parametrize("how", ["cancel", "terminate"])
async def test_a_cancelled_or_terminated_run_leaves_no_limit(client, task_queue, etcd, how):
    assert (await etcd.wait_healthy()).ok
    member = (await container_ids(etcd))["etcd1"]
    await held_then_ended(client, task_queue, etcd, how, "etcd1", lambda: bool(limits_from_kernel(member)),
                          fault="disk-slow", fault_params=THROTTLE)
    assert limits_from_kernel(member) == []
    assert (await etcd.wait_healthy()).ok


# The CLI's environment with a task queue of its own (test_fault_kinds' fixture).
cli_env = fault_kinds.cli_env


BAD = {
    "negative-rate": (["--fault", "disk-slow", "-p", "write_bps=-1mb"], "fault disk-slow: write_bps=-1mb is invalid"),
    "zero-iops": (["--fault", "disk-slow", "-p", "write_iops=0"], "fault disk-slow: write_iops=0 is invalid"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_disk_input_exits_2_with_one_line_and_touches_nothing(cli_env, etcd, case):
    args, message = BAD[case]
    since = since_now()
    proc = await asyncio.to_thread(starter, "chaos", *args, "--countdown", "0", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert (await events_since(etcd, since)) == []
    assert all(limits_from_kernel(c) == [] for c in (await container_ids(etcd)).values())


async def test_a_disk_fault_on_a_subject_without_a_data_path_exits_2_with_one_line(cli_env):
    async with private_copy(str(NO_ROLES), PORT_RANGE) as plain:
        proc = await asyncio.to_thread(starter, "chaos", "--subject", str(NO_ROLES), "--fault", "disk-slow",
                                       "--target", "plain1", "--countdown", "0", *subject_args(plain), env=cli_env)
        assert all(limits_from_kernel(c) == [] for c in (await container_ids(plain)).values())
    assert proc.returncode == 2, proc.stderr
    # Refused in preflight (the run started and stopped there): one error line, no traceback.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: disk-slow: plain1 has no data path declared by its subject (Subject.data_paths); "
                      "nothing was injected"], proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
