"""Prometheus metrics of a worker (CHAOS_METRICS_ADDRESS=host:port): the Temporal SDK's own, the chaos runs'
(workflows/metrics.py) and a gauge of the faults injected right now.

The SDK's runtime serves the endpoint; a client connected with that runtime feeds it (worker.py does).
"""

from __future__ import annotations

import asyncio
import logging
import os

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime
from temporalio.service import RPCError

from durable_chaos.contracts import WORKFLOW_NAME, Attr, FaultState
from durable_chaos.runtime.connect import telemetry
from workflows.metrics import FAULTS_INJECTED, TIME_TO_DETECT, TIME_TO_RESTORE, TTD_BUCKETS, TTR_BUCKETS

METRICS_ADDRESS_ENV = "CHAOS_METRICS_ADDRESS"
# How often the gauge is refreshed: one visibility count per interval, cheap for the server.
FAULTS_POLL_S = 3.0

log = logging.getLogger(__name__)


def metrics_address() -> str | None:
    """host:port to serve /metrics on, or None. ValueError when it is not host:port."""
    address = os.environ.get(METRICS_ADDRESS_ENV, "").strip()
    if not address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{METRICS_ADDRESS_ENV} must be host:port, e.g. 127.0.0.1:9464 (got {address!r})")
    return address


def metrics_runtime(address: str) -> Runtime:
    """A runtime serving Prometheus metrics on `address`. Durations in seconds (Prometheus' convention), and
    buckets for the chaos timings that resolve sub-second detection as well as a slow failover."""
    return Runtime(telemetry=telemetry(metrics=PrometheusConfig(
        bind_address=address, durations_as_seconds=True,
        histogram_bucket_overrides={TIME_TO_DETECT: list(TTD_BUCKETS), TIME_TO_RESTORE: list(TTR_BUCKETS)},
    )))


def faults_query(task_queue: str) -> str:
    return (f'WorkflowType="{WORKFLOW_NAME}" AND ExecutionStatus="Running" AND TaskQueue="{task_queue}" '
            f'AND {Attr.FAULT_STATE.name}="{FaultState.INJECTED.value}"')


async def watch_injected_faults(client: Client, runtime: Runtime, task_queue: str) -> None:
    """Keep the gauge at the number of running chaos runs on `task_queue` whose fault is on, until cancelled.

    Counted from the server (the ChaosFaultState search attribute each run sets before its kill) rather than by
    this worker: the figure is right whichever worker injected, and every worker of a fleet reports the same one
    (a dashboard takes the max per task queue, not the sum)."""
    gauge = runtime.metric_meter.create_gauge(FAULTS_INJECTED, "running chaos runs whose fault is on now")
    labels = {"namespace": client.namespace, "task_queue": task_queue}
    warned = False
    while True:
        try:
            gauge.set((await client.count_workflows(faults_query(task_queue))).count, labels)
            warned = False
        except RPCError as err:  # the server is away for a moment: keep the last figure, say so once
            if not warned:
                log.warning("cannot count injected faults (%s): %s keeps its last value", err.message, FAULTS_INJECTED)
                warned = True
        await asyncio.sleep(FAULTS_POLL_S)
