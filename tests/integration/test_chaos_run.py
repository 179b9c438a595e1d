"""A full chaos run against a real 3-member etcd cluster in Docker and a real Temporal dev server.

What happened is checked against Docker's own record (its event log), not against the report.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from durable_chaos.contracts import ChaosInput, FaultState
from tests.conftest import running_worker
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (24000, 24490)


async def test_full_chaos_run_kills_detects_and_restores_exactly_one_member(client, task_queue, etcd):
    since = datetime.now(timezone.utc)
    async with running_worker(client, task_queue):
        report = await client.execute_workflow(
            ChaosDemoWorkflow.run,
            ChaosInput(subject=etcd.ref, countdown_s=2),
            id=f"t-run-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert report.verdict == "pass", report.reasons
    assert report.target in etcd.instance.subject.services
    # Docker saw exactly one container die, and it is the one the report names.
    assert (await etcd.died_since(since)) == [report.target]
    assert report.fault_state == FaultState.RESTORED
    assert all((await etcd.running()).values()), (await etcd.running())
    final = await etcd.check()
    assert final.ok, final.violations
    # Plausible timings: detection well inside the interval + a check; restore within etcd's rejoin time.
    assert 0 <= report.time_to_detect_s < 3, report.time_to_detect_s
    assert 0 < report.time_to_restore_s < 30, report.time_to_restore_s
    assert report.injected_at < report.detected_at < report.restored_at
    # Load ran throughout: a baseline before the kill and a dip while a member was down.
    assert report.load.baseline_ops_s and report.load.baseline_ops_s > 0
    assert report.load.worst_fault_ops_s is not None
    assert report.diagnosis is not None and report.diagnosis.correct, report.diagnosis


async def test_given_target_is_the_one_killed(client, task_queue, etcd):
    since = datetime.now(timezone.utc)
    async with running_worker(client, task_queue):
        report = await client.execute_workflow(
            ChaosDemoWorkflow.run,
            ChaosInput(subject=etcd.ref, target="etcd2", countdown_s=0),
            id=f"t-run-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert report.verdict == "pass", report.reasons
    assert report.target == "etcd2"
    assert (await etcd.died_since(since)) == ["etcd2"]
    assert all((await etcd.running()).values())


async def test_a_load_the_subject_cannot_carry_is_said_in_the_reasons(client, task_queue, etcd):
    """One operation in flight cannot answer 5,000 a second (etcd takes a millisecond or more for each): the run
    says its load answered a fraction of what was asked, instead of reading as a run under the load it asked for."""
    async with running_worker(client, task_queue):
        report = await client.execute_workflow(
            ChaosDemoWorkflow.run,
            ChaosInput(subject=etcd.ref, target="etcd2", countdown_s=1, load_rate=5000, load_concurrency=1),
            id=f"t-run-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    [line] = [r for r in report.reasons if r.startswith("the load answered")]
    answered = report.load.baseline_ops_s
    assert answered and answered < 2500, report.load.baseline_ops_s
    assert "of the 5000 asked" in line and "the run's figures are those of a lighter load" in line, line
    assert report.fault_state == FaultState.RESTORED
    assert (await etcd.check()).ok
