"""The benchmark's split of a run's time (bench/task_anatomy.py) wraps private functions of the Temporal SDK. An SDK
that renames one leaves that part "not measured" in the table instead of failing the benchmark, so only a test
notices: here a real worker on the test's dev server runs one activity and one workflow, and each part must come out
measured and consistent with what the activity did."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import temporalio.worker._activity as activity_worker
from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.task_anatomy import TaskAnatomy

NAP_S = 0.2


@activity.defn
async def nap() -> str:
    await asyncio.sleep(NAP_S)
    return "rested"


@workflow.defn(sandboxed=False)
class OneNap:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(nap, start_to_close_timeout=timedelta(seconds=10))


async def test_each_part_of_a_workflow_task_and_of_an_activity_is_measured(client, task_queue):
    original = activity_worker._ActivityWorker._execute_activity
    workflow_id = f"anatomy-{uuid.uuid4().hex[:8]}"
    with TaskAnatomy() as anatomy:
        async with Worker(client, task_queue=task_queue, workflows=[OneNap], activities=[nap],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            assert await client.execute_workflow(OneNap.run, id=workflow_id, task_queue=task_queue) == "rested"

    parts = anatomy.activity_parts[(workflow_id, "nap", 1)]
    # Our code is the activity's nap and little more; the worker's handling holds it and the completion call.
    assert 0.9 * NAP_S <= parts["ours"] < NAP_S + 0.5, parts  # (a loop's timer may fire a little early)
    assert parts["complete"] > 0, parts
    assert parts["worker"] >= parts["ours"] + parts["complete"], parts
    figures = anatomy.figures()
    for part in ("decode", "workflow code", "encode", "complete", "whole activation"):
        assert figures[part]["n"] >= 2, (part, figures[part])  # the workflow's start and the activity's result
    # Leaving the block puts the SDK back as it was.
    assert activity_worker._ActivityWorker._execute_activity is original
