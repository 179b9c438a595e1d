"""Runs on a Docker host: every activity that touches the subject goes to that host's task queue, and a restore whose
host has no worker waits for one, saying so, instead of failing or running anywhere else. Against a real dev server,
with the fake cluster's activities (tests/workflow/test_workflow_logic.py) standing in for Docker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.worker import Replayer

from durable_chaos.contracts import ChaosInput, FaultState, Progress, SubjectRef, report_of_failure
from durable_chaos.ids import host_queue
from durable_chaos.runtime.worker import WORKFLOWS, build_worker
from tests.conftest import walk_to_gate
from tests.workflow.test_workflow_logic import FakeCluster
from workflows.chaos import ChaosDemoWorkflow

HOST_INDEPENDENT = {"diagnose", "wait_until_run_closes"}


def on_host(host: str, **kw) -> ChaosInput:
    return ChaosInput(subject=SubjectRef(name="etcd", project="fake", host=host), countdown_s=1, load_window_s=0.05,
                      **kw)


async def scheduled_queues(handle) -> dict[str, set[str]]:
    """activity type -> the task queues the run scheduled it on, from its history."""
    out: dict[str, set[str]] = {}
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            out.setdefault(a.activity_type.name, set()).add(a.task_queue.name)
    return out


async def test_a_run_on_a_host_runs_its_subject_activities_there_and_its_restore_waits_for_that_hosts_worker(client):
    cluster = FakeCluster()
    fakes = cluster.activities()
    queue, host = f"hosts-{uuid.uuid4().hex[:8]}", "b"
    shared = [f for f in fakes if f.__temporal_activity_definition.name in HOST_INDEPENDENT]

    def host_worker():
        return build_worker(client, host_queue(queue, host), fakes, workflows=[])

    async with build_worker(client, task_queue=queue, activity_functions=shared):
        first = host_worker()
        await first.__aenter__()
        handle = await client.start_workflow(ChaosDemoWorkflow.run, on_host(host, target="n2", interactive=True),
                                             id=f"hosts-{uuid.uuid4().hex[:8]}", task_queue=queue)
        try:
            await walk_to_gate(handle, "detect")  # the fault is on n2
            assert cluster.down == {"n2"}
            await first.__aexit__(None, None, None)  # host b's only worker is gone
            first = None
            lost_at = time.monotonic()
            abort = asyncio.create_task(handle.execute_update("abort", "test: restore now", result_type=Progress))

            async def progress() -> Progress:
                return await handle.query(ChaosDemoWorkflow.progress)

            while (p := await progress()).waiting_for_host is None:
                assert time.monotonic() - lost_at < 30, "the run never said it waits for host b"
                await asyncio.sleep(0.1)
            said_after = time.monotonic() - lost_at
            assert p.waiting_for_host == host and p.fault_state == FaultState.INJECTED
            assert f"waiting for a worker on host {host}" in p.message
            assert (await handle.describe()).memo and (await (await handle.describe()).memo()).get(
                "waiting_for_host") == host  # readable with no worker: the memo
            await asyncio.sleep(2 * 3)  # two more waits: the restore is still pending, nothing ran it elsewhere
            assert cluster.down == {"n2"} and cluster.restores == []
            async with host_worker():  # a worker of host b comes back
                await asyncio.wait_for(abort, 30)
                try:
                    report = await handle.result()
                except WorkflowFailureError as err:  # aborted before detection: a fail verdict, with its report
                    report = report_of_failure(err)
        finally:
            if first is not None:
                await first.__aexit__(None, None, None)
            with contextlib.suppress(Exception):
                await handle.terminate(reason="test cleanup")
    print(f"said it waits for host {host} {said_after:.1f} s after its worker went")
    assert cluster.restores == ["n2"] and not cluster.down
    assert report.host == host and report.fault_state == FaultState.RESTORED, report.reasons
    queues = await scheduled_queues(handle)
    for activity_type, where in queues.items():
        expected = {queue} if activity_type in HOST_INDEPENDENT else {host_queue(queue, host)}
        assert where == expected, (activity_type, where)
    assert {"preflight", "inject_fault", "restore_fault", "wait_healthy", "check_safety"} <= set(queues)
    # The waits are in the history (a schedule-to-start timeout each, then the same activity again): it replays.
    await Replayer(workflows=WORKFLOWS, data_converter=client.data_converter).replay_workflow(
        await handle.fetch_history())
