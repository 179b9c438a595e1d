"""Experiments with steps on a real etcd cluster: a multi-step scenario survives a worker SIGKILL between its
steps, two faults in parallel lanes are both undone when the run is cancelled, a fault that does nothing makes the
run inconclusive (exit 5), and a seeded random schedule repeats itself. Real Docker, a real Temporal dev server,
workers as separate processes where one is killed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from temporalio.client import WorkflowFailureError

from durable_chaos.cli.reports import to_markdown
from durable_chaos.contracts import WORKFLOW_TASK_TIMEOUT, ChaosInput, FaultState, Step, final_report
from durable_chaos.ids import fault_tag
from tests.conftest import command_env, running_worker, starter, subject_args
from tests.fault_checks import leftovers
from tests.workers import WorkerProcess
from workflows.chaos import ChaosDemoWorkflow

pytestmark = pytest.mark.integration
PORT_RANGE = (26000, 26490)


def steps_input(etcd, *steps, **kw) -> ChaosInput:
    return ChaosInput(subject=etcd.ref, countdown_s=1, steps=[Step.model_validate(s) for s in steps], **kw)


async def progress_until(handle, predicate, timeout: float = 300):
    """Poll the run's progress until `predicate` holds. Generous: the first network fault of a fresh machine builds
    its helper image in preflight."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            p = await handle.query(ChaosDemoWorkflow.progress)
            if predicate(p):
                return p
        except Exception:  # noqa: BLE001 - a query can race a worker's start
            pass
        assert time.monotonic() < deadline, "the run never got there"
        await asyncio.sleep(0.1)


async def test_a_multi_step_scenario_survives_a_worker_sigkill_between_its_steps(client, task_queue, etcd, tmp_path):
    """Partition the leader for 8 s, heal, wait until steady, kill a follower: the worker dies between the faults."""
    await etcd.wait_healthy()
    address = client.service_client.config.target_host
    first = WorkerProcess(address, task_queue, tmp_path).wait_ready()
    second = None
    try:
        handle = await client.start_workflow(
            ChaosDemoWorkflow.run,
            steps_input(etcd, {"name": "cut the leader off", "fault": {"fault": "partition", "target": "leader",
                                                                      "duration_s": 8}},
                        {"until_steady": True}, {"wait_s": 3}, {"fault": {"fault": "kill", "target": "follower"}}),
            id=etcd.instance.project, task_queue=task_queue, task_timeout=WORKFLOW_TASK_TIMEOUT)
        # Between the faults: the partition healed, the subject steady again, the run waiting 3 s (a wait that is
        # long enough to be caught here: a steady subject makes "until steady" end at once).
        await progress_until(handle, lambda p: p.step == 3)
        first.sigkill()
        second = WorkerProcess(address, task_queue, tmp_path).wait_ready()
        report = await asyncio.wait_for(final_report(handle), 240)
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
    assert report.verdict == "pass", report.reasons
    partition, kill = report.steps
    assert (partition.step, partition.fault, partition.name) == (1, "partition", "cut the leader off")
    assert (kill.step, kill.fault) == (4, "kill")
    for step in report.steps:
        assert step.state == FaultState.RESTORED and step.effect.took_effect, step
        assert step.time_to_detect_s is not None and step.time_to_restore_s is not None, step
    assert partition.restored_at < kill.injected_at  # healed and steady before the follower was hit
    tags = [fault_tag(report.workflow_id, report.run_id, n) for n in (1, 2)]
    assert (await leftovers(etcd, tags)) == []
    await etcd.wait_healthy()


async def test_two_faults_in_parallel_lanes_are_both_undone_when_the_run_is_cancelled(client, task_queue, etcd):
    await etcd.wait_healthy()
    lanes = [[{"fault": {"fault": "pause", "target": "etcd2", "duration_s": 90, "allow_quorum_loss": True}}],
             [{"fault": {"fault": "loss", "params": {"percent": 40}, "target": "etcd3", "duration_s": 90}}]]
    async with running_worker(client, task_queue):
        handle = await client.start_workflow(ChaosDemoWorkflow.run, steps_input(etcd, {"lanes": lanes}),
                                             id=etcd.instance.project, task_queue=task_queue,
                                             task_timeout=WORKFLOW_TASK_TIMEOUT)
        both_on = await progress_until(
            handle, lambda p: len(p.steps) == 2 and all(s.state == FaultState.INJECTED for s in p.steps))
        assert sorted(s.fault for s in both_on.steps) == ["loss", "pause"]
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 120)
    desc = await handle.describe()
    tags = [fault_tag(handle.id, desc.run_id, n) for n in (1, 2)]
    assert (await leftovers(etcd, tags)) == []  # etcd2 unpaused, etcd3's drop rules gone
    await etcd.wait_healthy()


async def test_a_fault_that_cannot_take_effect_makes_the_run_inconclusive(client, etcd, tmp_path):
    """A rate cap far above the traffic is in place and changes nothing: the run says so, exit 5, never a pass."""
    path = tmp_path / "cap.yaml"
    path.write_text("subject: etcd\nsteps:\n  - fault: bandwidth\n    params: {rate: 10gbit}\n    target: etcd2\n"
                    "timeouts: {countdown: 0, detect: 4}\n")
    env = command_env(client.service_client.config.target_host, tmp_path,
                      CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")
    proc = await asyncio.to_thread(starter, "run", str(path), "--json", *subject_args(etcd), env=env)
    assert proc.returncode == 5, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "inconclusive"
    assert report["failed_because"] == ["bandwidth 10gbit etcd2 never took effect"]
    assert (await leftovers(etcd, [fault_tag(report["workflow_id"], report["run_id"])])) == []


async def test_a_random_schedule_with_the_same_seed_hits_the_same_members_at_the_same_offsets(client, task_queue,
                                                                                            etcd):
    schedules = []
    async with running_worker(client, task_queue):
        for _ in range(2):
            await etcd.wait_healthy()
            inp = steps_input(etcd, {"random": {"duration_s": 9, "kinds": ["pause", "stop"], "every_s": 4.5,
                                                "hold_s": 1.5, "seed": 20261204}})
            handle = await client.start_workflow(ChaosDemoWorkflow.run, inp, id=etcd.instance.project,
                                                 task_queue=task_queue, task_timeout=WORKFLOW_TASK_TIMEOUT)
            report = await asyncio.wait_for(final_report(handle), 120)
            assert report.seed == 20261204 and all(s.state == FaultState.RESTORED for s in report.steps), report
            start = report.steps[0].injected_at
            schedules.append([(s.fault, s.targets, s.drawn_at_s, (s.injected_at - start).total_seconds())
                              for s in report.steps])
            page = to_markdown(report)
            assert "| step 1 lane 2 at +4.5s | stop (grace 10s) etcd1: restored" in page, page  # when, as drawn
    first, again = schedules
    # The same faults on the same members at the same drawn offsets, one slot (4.5 s) apart.
    assert [s[:3] for s in first] == [s[:3] for s in again] and [s[2] for s in first] == [0, 4.5], schedules
    # And each was injected on time: measured from the first fault's injection, the second one's offset is the
    # drawn one, give or take how long an inject takes (a stop returns once the process has exited; seen up to
    # 1.8 s on a busy CI machine).
    assert all(abs(s[3] - 4.5) < 2.5 for s in (first[1], again[1])), schedules
    assert (await leftovers(etcd)) == []


async def test_the_parallel_lanes_example_runs_as_written(client, etcd, tmp_path):
    await etcd.wait_healthy()
    env = command_env(client.service_client.config.target_host, tmp_path,
                      CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")
    proc = await asyncio.to_thread(starter, "run", "examples/etcd-parallel-lanes.yaml", "--json", *subject_args(etcd),
                                   env=env)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["verdict"] == "pass", (report["reasons"], proc.stderr[-2000:])
    pause, loss = sorted(report["steps"], key=lambda s: s["lane"])
    assert (pause["fault"], pause["targets"], loss["fault"], loss["targets"]) == ("pause", ["etcd2"], "loss", ["etcd3"])
    # Side by side: the loss went in while etcd2 was still frozen.
    assert pause["injected_at"] < loss["injected_at"] < pause["restored_at"]
    assert (await leftovers(etcd)) == []
