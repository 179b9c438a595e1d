"""The worker: which workflows and activities run on the task queue, and how fast a crash is recovered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.registry import ALL as ACTIVITIES, HANDED_BACK, HOST_INDEPENDENT
from durable_chaos.ids import host_queue
from durable_chaos.runtime.connect import task_queue as default_task_queue
from durable_chaos.runtime.failures import CompactFailures
from durable_chaos.runtime.hand_back import HandBack
from durable_chaos.runtime.heartbeats import Heartbeats
from durable_chaos.runtime.loop_watch import LoopWatch
from durable_chaos.runtime.priority import run_ahead
from durable_chaos.runtime.run_log import RunLog
from workflows.campaign import ChaosCampaignWorkflow
from workflows.chaos import ChaosDemoWorkflow
from workflows.host import ChaosHostWorkflow
from workflows.notify import NotifyWorkflow
from workflows.reaper import FaultGuardWorkflow, FaultReaperWorkflow
from workflows.scheduled import ScheduledChaosWorkflow

log = logging.getLogger("chaos.worker")
WORKFLOWS = [ChaosDemoWorkflow, FaultGuardWorkflow, FaultReaperWorkflow, ScheduledChaosWorkflow, NotifyWorkflow,
             ChaosCampaignWorkflow, ChaosHostWorkflow]
# Modules passed through the sandbox: imported once per worker, not again for every workflow run.
# - rich: the starter's live view sends stderr through Rich while its own worker runs workflows, so a log line from
#   workflow code is printed by Rich, which imports its renderers lazily. Inside the sandbox that import would be
#   re-done there, hit restricted modules and fail the workflow task (the run then retries it forever).
# - workflows: the sandbox re-imported our workflow modules for each new run and for each run a worker took back
#   after its cache dropped it (a timed-out task, another worker's run): replaying this release's recorded runs
#   cost 65.9 CPU ms each in the sandbox as it was, 44.0 ms with the package passed through (bench: startup). On a
#   saturated host that work lands exactly when tasks are already late. What the sandbox still guarded there, that
#   workflow code reads no clock, randomness or outside world of its own, a unit test checks on the source
#   (tests/unit/test_workflow_code_is_deterministic.py), and the replay tests check the code against recorded runs.
SANDBOX = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("rich",
                                                                                                   "workflows"))


class WatchedWorker(Worker):
    """A worker that runs ahead of the subjects it tests (runtime/priority.py) and whose event loop is watched while
    it runs: a stall long enough to miss heartbeats is logged with what the loop was doing (runtime/loop_watch.py)."""

    async def run(self) -> None:
        log.info("%s", run_ahead())
        with LoopWatch(asyncio.get_running_loop()):
            await super().run()


@contextlib.asynccontextmanager
async def serve(client: Client, host: str, task_queue: str | None = None, own_host_only: bool = False,
                activity_functions: list | None = None,
                interceptors: Sequence[Interceptor] = ()) -> AsyncIterator[Worker]:
    """The workers of one process, for Docker host `host`: one on the fleet's queue (every workflow; every activity
    too, for runs from before hosts, unless `own_host_only`: then only those that touch no subject), and one on
    the host's own queue (every activity), which the server routes each run's subject activities to. Yields the
    first. `interceptors`: the benchmark's, on both."""
    queue = task_queue or default_task_queue()
    activities = ACTIVITIES if activity_functions is None else activity_functions
    async with build_worker(client, queue, HOST_INDEPENDENT if own_host_only else activities,
                            interceptors) as shared, \
            build_worker(client, host_queue(queue, host), activities, interceptors, workflows=[]):
        yield shared


def build_worker(client: Client, task_queue: str | None = None, activity_functions: list | None = None,
                 interceptors: Sequence[Interceptor] = (), workflows: Sequence[type] = WORKFLOWS) -> Worker:
    """The worker every entry point runs; tests swap in their own `activity_functions` and keep the rest, the
    benchmark adds `interceptors` (after the product's own). A host's queue gets no `workflows`."""
    # One watch per event loop: the host queue's worker shares the fleet queue's loop.
    return (WatchedWorker if workflows else Worker)(
        client,
        task_queue=task_queue or default_task_queue(),
        workflows=workflows,
        workflow_runner=SANDBOX,
        activities=ACTIVITIES if activity_functions is None else activity_functions,
        # After a worker dies, its workflows wait on its sticky queue this long before any worker may take them. A
        # task that waits longer on a live but busy worker is only replayed from the start by whoever takes it.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=0.5),
        # Heartbeats must reach the server well inside the activities' 1.2 s heartbeat timeout (workflows/policy.py).
        max_heartbeat_throttle_interval=timedelta(seconds=0.3),
        default_heartbeat_throttle_interval=timedelta(seconds=0.3),
        # What changes a subject gets this long to finish when the worker stops; what only watches is handed back
        # (activities are registered under their function's name).
        graceful_shutdown_timeout=timedelta(seconds=5),
        interceptors=[RunLog(), Heartbeats(), HandBack(f.__name__ for f in HANDED_BACK), CompactFailures(),
                      *interceptors],
    )
