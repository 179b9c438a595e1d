"""The worker: which workflows and activities run on the task queue, and how fast a crash is recovered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import activities
from durable_chaos.contracts import Attr
from durable_chaos.runtime.connect import task_queue as default_task_queue
from durable_chaos.runtime.hand_back import HandBack
from durable_chaos.runtime.heartbeats import Heartbeats
from durable_chaos.runtime.loop_watch import LoopWatch
from durable_chaos.runtime.priority import run_ahead
from durable_chaos.runtime.run_log import RunLog
from workflows.campaign import ChaosCampaignWorkflow
from workflows.chaos import ChaosDemoWorkflow
from workflows.notify import NotifyWorkflow
from workflows.reaper import FaultGuardWorkflow, FaultReaperWorkflow
from workflows.scheduled import ScheduledChaosWorkflow

log = logging.getLogger("chaos.worker")
WORKFLOWS = [ChaosDemoWorkflow, FaultGuardWorkflow, FaultReaperWorkflow, ScheduledChaosWorkflow, NotifyWorkflow,
             ChaosCampaignWorkflow]
# The starter's live view sends stderr through Rich while its own worker runs workflows, so a log line from workflow
# code is printed by Rich, which imports its renderers lazily. Inside the sandbox that import would be re-done there,
# hit restricted modules and fail the workflow task (the run then retries it forever): Rich passes through.
SANDBOX = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("rich"))


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


class WatchedWorker(Worker):
    """A worker that runs ahead of the subjects it tests (runtime/priority.py) and whose event loop is watched while
    it runs: a stall long enough to miss heartbeats is logged with what the loop was doing (runtime/loop_watch.py)."""

    async def run(self) -> None:
        log.info("%s", run_ahead())
        with LoopWatch(asyncio.get_running_loop()):
            await super().run()


def build_worker(client: Client, task_queue: str | None = None, activity_functions: list | None = None,
                 interceptors: Sequence[Interceptor] = ()) -> Worker:
    """The worker every entry point runs; tests swap in their own `activity_functions` and keep the rest, the
    benchmark adds `interceptors` (after the product's own)."""
    return WatchedWorker(
        client,
        task_queue=task_queue or default_task_queue(),
        workflows=WORKFLOWS,
        workflow_runner=SANDBOX,
        activities=activities.ALL if activity_functions is None else activity_functions,
        # After a worker dies, its workflows wait on its sticky queue this long before any worker may take them. A
        # task that waits longer on a live but busy worker is only replayed from the start by whoever takes it.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=0.5),
        # Heartbeats must reach the server well inside the activities' 1 s heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=0.5),
        default_heartbeat_throttle_interval=timedelta(seconds=0.5),
        # What changes a subject gets this long to finish when the worker stops; what only watches is handed back
        # (activities are registered under their function's name).
        graceful_shutdown_timeout=timedelta(seconds=5),
        interceptors=[RunLog(), Heartbeats(), HandBack(f.__name__ for f in activities.HANDED_BACK),
                      *interceptors],
    )


async def retire_reaper_schedule(client: Client, task_queue: str | None = None) -> bool:
    """Delete the reaper Schedule earlier versions installed (a do-nothing run in the web UI's list every minute);
    each fault now has its own guard. Returns whether there was one."""
    try:
        await client.get_schedule_handle(f"chaos-fault-reaper-{task_queue or default_task_queue()}").delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True
