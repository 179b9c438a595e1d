"""Network faults are undone whatever happens to the process running the run: a worker SIGKILLed while the fault
is in effect (another worker restores it), a terminated run (its guard restores it), and a run terminated along with
its guard (`python starter.py reap` restores it).

Real Docker + etcd + Temporal dev server; workers are separate processes (`python worker.py`). The fault is checked
in the member's own network namespace by a helper of ours, never by asking the product.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from durable_chaos.contracts import (
    WORKFLOW_TASK_TIMEOUT,
    ChaosInput,
    FaultState,
    GuardReport,
    final_report,
)
from durable_chaos.ids import fault_guard_id, fault_tag
from tests.conftest import running_worker, starter
from tests.fault_checks import (
    container_ids,
    events_since,
    leftovers,
    net_state,
    net_states,
    qdisc_handle,
)
from tests.integration.test_durability import cli_env, reap_until_restored
from tests.integration.test_fault_kinds import held_run, record, row, since_now
from tests.workers import WorkerProcess
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (33000, 33990)
TAGS: list[str] = []
PARAMS = {"partition": {}, "loss": {"percent": 30}, "bandwidth": {"rate": "1mbit"}}


async def in_effect(etcd, service: str, kind: str, tag: str) -> bool:
    """Is the run's fault in the member's namespace now? Read by our own helper."""
    ns = await net_state((await container_ids(etcd))[service])
    if kind == "bandwidth":
        return f"qdisc tbf {qdisc_handle(tag)}: dev eth0 root" in ns.qdiscs
    return ns.chains() == [f"CHAOS-{tag}"] and len(ns.hooks(f"CHAOS-{tag}")) == 2


async def started_by(handle: WorkflowHandle, activity: str) -> list[str]:
    """The worker identities ("pid@host") that started each attempt of `activity` recorded in the history."""
    scheduled, who = {}, []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if scheduled.get(attrs.scheduled_event_id) == activity:
                who.append(attrs.identity)
    return who


async def inject_completed(handle: WorkflowHandle) -> bool:
    """The inject activity has reported its result: the fault is in place and the run knows it."""
    scheduled = set()
    async for event in handle.fetch_history_events():
        if (event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and event.activity_task_scheduled_event_attributes.activity_type.name == "inject_fault"):
            scheduled.add(event.event_id)
        elif (event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
              and event.activity_task_completed_event_attributes.scheduled_event_id in scheduled):
            return True
    return False


@contextlib.asynccontextmanager
async def settled(client, task_queue: str, handle_box: list):
    """If the test fails while its run is still open, end that run with a worker of our own (abort restores), so
    one failure does not leave the module's shared etcd copy partitioned for the tests after it."""
    try:
        yield
    finally:
        for handle in handle_box:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                async with running_worker(client, task_queue):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(handle.execute_update(ChaosDemoWorkflow.abort, "test failed"), 120)


@pytest.mark.parametrize("kind", list(PARAMS))
async def test_worker_sigkilled_during_a_network_fault_another_worker_restores_it(client, task_queue, etcd, tmp_path,
                                                                                  kind):
    assert (await etcd.wait_healthy()).ok
    before = await net_states(etcd)
    since = since_now()
    address = client.service_client.config.target_host
    opened: list[WorkflowHandle] = []
    async with settled(client, task_queue, opened):
        first = WorkerProcess(address, task_queue, tmp_path).wait_ready()
        second = None
        try:
            handle = await client.start_workflow(
                ChaosDemoWorkflow.run,
                ChaosInput(subject=etcd.ref, fault=kind, fault_params=PARAMS[kind], target="etcd2", countdown_s=0,
                           detect_timeout_s=6),
                id=etcd.instance.project, task_queue=task_queue, task_timeout=WORKFLOW_TASK_TIMEOUT)
            opened.append(handle)
            tag = fault_tag(handle.id, handle.result_run_id)
            TAGS.append(tag)
            deadline = time.monotonic() + 60
            while not await inject_completed(handle):
                assert time.monotonic() < deadline, "the fault was never injected"
                await asyncio.sleep(0.05)
            assert await in_effect(etcd, "etcd2", kind, tag)
            killed_at = first.sigkill()
            assert await in_effect(etcd, "etcd2", kind, tag)  # nobody else undoes it: the fault outlives its worker
            second = WorkerProcess(address, task_queue, tmp_path)
            report = await asyncio.wait_for(final_report(handle), 180)
            recovered_s = round(time.time() - killed_at, 1)
        finally:
            first.stop()
            if second:
                second.stop()
    assert report.fault_state == FaultState.RESTORED and report.targets == ["etcd2"], report.reasons
    assert report.final_check is not None and report.final_check.ok, report.reasons
    # The load window the dead worker was running left no history: the safety check cannot judge (its operations
    # may have landed), and must not call that lost data.
    assert report.safety.verdict == "unknown", report.reasons
    restorers = await started_by(handle, "restore_fault")
    assert restorers and all(who.startswith(f"{second.proc.pid}@") for who in restorers), restorers
    assert not await in_effect(etcd, "etcd2", kind, tag)
    assert (await leftovers(etcd, [tag])) == []
    assert (await net_states(etcd)) == before  # every namespace reads exactly as before the run
    assert (await events_since(etcd, since)) == []  # no container was stopped, paused or restarted on the way
    assert (await etcd.wait_healthy()).ok
    record({**row(report, f"etcd {kind}, worker SIGKILL after inject"), "closed_after_kill_s": recovered_s})


async def test_terminate_during_a_partition_its_guard_removes_the_chain(client, task_queue, etcd, tmp_path):
    assert (await etcd.wait_healthy()).ok
    before = await net_states(etcd)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        async with held_run(client, task_queue, etcd, fault="partition", target="etcd1") as handle:
            tag = fault_tag(handle.id, handle.result_run_id)
            TAGS.append(tag)
            assert await in_effect(etcd, "etcd1", "partition", tag)
            await handle.terminate(reason="simulating an operator's terminate")
        terminated_at = time.monotonic()
        guard = client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id), result_type=GuardReport)
        report = await asyncio.wait_for(guard.result(), 90)
        took = round(time.monotonic() - terminated_at, 1)
    finally:
        worker.stop()
    assert (report.run_status, report.fault_state) == ("TERMINATED", FaultState.INJECTED), report
    assert report.action.action == "restored" and report.action.target == "etcd1", report
    assert report.action.healthy_after is True
    assert not await in_effect(etcd, "etcd1", "partition", tag)
    assert (await leftovers(etcd, [tag])) == []
    assert (await net_states(etcd)) == before
    assert (await etcd.wait_healthy()).ok
    record({"scenario": "etcd partition, run terminated: its guard restored", "restored_after_s": took})


async def test_terminate_with_its_guard_during_a_partition_reap_removes_the_chain(client, task_queue, etcd,
                                                                                  tmp_path):
    assert (await etcd.wait_healthy()).ok
    before = await net_states(etcd)
    env = cli_env(client, task_queue, tmp_path)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        async with held_run(client, task_queue, etcd, fault="partition", target="etcd3") as handle:
            tag = fault_tag(handle.id, handle.result_run_id)
            TAGS.append(tag)
            # A bulk terminate takes the guard along: nothing watches the fault any more.
            await client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id)).terminate(reason="bulk")
            await handle.terminate(reason="bulk")
        await asyncio.sleep(3)
        assert await in_effect(etcd, "etcd3", "partition", tag)  # left in place: only the reaper can undo it now
        proc = await reap_until_restored(env)
    finally:
        worker.stop()
    assert proc.returncode == 0, proc.stderr
    assert "etcd3" in proc.stderr and "restored" in proc.stderr, proc.stderr
    assert not await in_effect(etcd, "etcd3", "partition", tag)
    assert (await leftovers(etcd, [tag])) == []
    assert (await net_states(etcd)) == before
    assert (await etcd.wait_healthy()).ok
    # A second sweep finds the member already healthy and touches nothing.
    again = await asyncio.to_thread(starter, "reap", env=env, timeout=120)
    assert again.returncode == 0 and "restored" not in again.stderr, again.stderr


async def test_zz_nothing_is_left_behind_by_this_module(etcd):
    assert TAGS, "no run recorded its tag: the tests above did not run"
    assert (await leftovers(etcd, TAGS)) == []
    assert (await etcd.wait_healthy()).ok
