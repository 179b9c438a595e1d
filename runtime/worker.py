"""The worker: which workflows and activities run on the task queue, and how fast a crash is recovered."""

from __future__ import annotations

import os
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.service import RPCError
from temporalio.worker import Worker

import activities
from contracts import Attr, ReapRequest
from runtime.connect import task_queue as default_task_queue
from runtime.run_log import RunLog
from workflows.chaos import ChaosDemoWorkflow
from workflows.reaper import FaultReaperWorkflow
from workflows.scheduled import ScheduledChaosWorkflow

WORKFLOWS = [ChaosDemoWorkflow, FaultReaperWorkflow, ScheduledChaosWorkflow]
# How often the reaper looks for faults that closed runs left behind (CHAOS_REAPER_EVERY_S overrides).
REAPER_EVERY = timedelta(minutes=1)


class SearchAttributesMissing(RuntimeError):
    pass


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the Chaos* search attributes the workflow upserts. Idempotent; returns the names it added."""
    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {k.name: k.indexed_value_type for k in Attr.ALL if k.name not in have.custom_attributes}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as err:
        wanted = " ".join(
            f"--name {name} --type {IndexedValueType.Name(kind).removeprefix('INDEXED_VALUE_TYPE_').title()}"
            for name, kind in missing.items()
        )
        raise SearchAttributesMissing(
            f"cannot register search attributes ({err.status.name if err.status else err}: {err.message}); "
            f"ask an admin to run: temporal operator search-attribute create {wanted}"
        ) from err
    return sorted(missing)


def build_worker(client: Client, task_queue: str | None = None) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or default_task_queue(),
        workflows=WORKFLOWS,
        activities=activities.ALL,
        # After a worker dies, its workflows wait on its sticky queue this long before any worker may take them.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        # Heartbeats must reach the server well inside the activities' 5 s heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=2),
        default_heartbeat_throttle_interval=timedelta(seconds=2),
        graceful_shutdown_timeout=timedelta(seconds=5),
        interceptors=[RunLog()],
    )



def reaper_schedule_id(task_queue: str) -> str:
    return f"chaos-fault-reaper-{task_queue}"


async def ensure_reaper_schedule(client: Client, task_queue: str | None = None,
                                 every: timedelta | None = None) -> str:
    """Install the reaper's Schedule for this task queue if it is not there yet (idempotent). Returns its id."""
    queue = task_queue or default_task_queue()
    every = every or timedelta(seconds=float(os.environ.get("CHAOS_REAPER_EVERY_S") or REAPER_EVERY.total_seconds()))
    schedule_id = reaper_schedule_id(queue)
    try:
        await client.create_schedule(
            schedule_id,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    FaultReaperWorkflow.run, ReapRequest(task_queue=queue), id=f"{schedule_id}-run",
                    task_queue=queue, static_summary="restore faults left by closed chaos runs",
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            ),
        )
    except ScheduleAlreadyRunningError:
        pass
    return schedule_id
