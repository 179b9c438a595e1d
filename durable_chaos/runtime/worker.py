"""The worker: which workflows and activities run on the task queue, and how fast a crash is recovered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker

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
# Workflow code runs without Temporal's sandbox. The sandbox guards two things: that workflow code reads no clock,
# randomness or outside world of its own (checked at run time, on modules it imports itself), and that runs share
# no module state (it re-imports modules for each run). Our `workflows` package had to be passed through it already
# (re-imported per run it cost 65.9 CPU ms a replay, 44.0 passed through: bench startup, issue 25), which left
# neither guard on our code; and `rich` had to be, or a log line from workflow code failed the task. What the sandbox
# still cost was its own: every activation entered it and every payload the SDK encoded asked it for a serialization
# context, about half the CPU of replaying this release's recorded runs (bench startup: `replay_cpu_ms`, beside
# the sandbox as it was). Determinism is guarded where it can fail a build instead: a unit test reads the workflow
# source for clocks, randomness, I/O and environment (tests/unit/test_workflow_code_is_deterministic.py), and the
# replay tests run every recorded history through this same runner. Workflow modules keep no state between runs.
RUNNER = UnsandboxedWorkflowRunner()
# After a worker dies, its workflows wait on its sticky queue this long before any worker may take them; a task that
# waits longer on a live but busy worker times out and is replayed from the start by whoever takes it next. 20 etcd
# copies on one worker (bench --parallel 20,20,20): with 0.5 s, 0, 0 and 4 such timeouts in three steps (session 27;
# 1 to 7 a sweep in sessions 22-25); with 1 s, 0, 1, 0 and 0, 0, 0 in two sweeps (session 28). A worker's death
# costs a workflow task 0.5 s more; the resume after a SIGKILL at the countdown, the inject and its record stayed
# 0.93-1.19 s (the next activity there is a retry after the 1.2 s heartbeat timeout, which does not wait for it).
STICKY_TIMEOUT = timedelta(seconds=1)


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
        workflow_runner=RUNNER,
        activities=ACTIVITIES if activity_functions is None else activity_functions,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        # Heartbeats must reach the server well inside the activities' 1.2 s heartbeat timeout (workflows/policy.py).
        max_heartbeat_throttle_interval=timedelta(seconds=0.3),
        default_heartbeat_throttle_interval=timedelta(seconds=0.3),
        # What changes a subject gets this long to finish when the worker stops; what only watches is handed back
        # (activities are registered under their function's name).
        graceful_shutdown_timeout=timedelta(seconds=5),
        interceptors=[RunLog(), Heartbeats(), HandBack(f.__name__ for f in HANDED_BACK), CompactFailures(),
                      *interceptors],
    )
