"""Run a worker: connect (envconfig; the embedded dev server by default), register everything, run until Ctrl-C."""

import asyncio
import contextlib
import signal
import sys

import uvloop

from activities.notify import NOTIFY_URL_ENV, where, worker_notify_url
from durable_chaos.runtime.connect import exit_process, task_queue
from durable_chaos.runtime.devserver import ServerUnreachable, connect_or_start
from durable_chaos.runtime.metrics import metrics_address, metrics_runtime, watch_injected_faults
from durable_chaos.runtime.priority import run_ahead
from durable_chaos.runtime.run_log import show_in_terminal
from durable_chaos.runtime.server_setup import SearchAttributesMissing, ensure_search_attributes, retire_reaper_schedule
from durable_chaos.runtime.worker import build_worker


async def main() -> int:
    try:  # the worker's own settings: a typo must stop it here, not surface in the first run's end
        address, notify_url = metrics_address(), worker_notify_url()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runtime = metrics_runtime(address) if address else None
    try:
        client = await connect_or_start(runtime=runtime)
        added = await ensure_search_attributes(client)
    except (ServerUnreachable, SearchAttributesMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if added:
        print(f"registered search attributes: {', '.join(added)}")
    if await retire_reaper_schedule(client):
        print("deleted the reaper schedule of earlier versions: every fault now has a guard of its own")
    if address:
        print(f"Prometheus metrics on http://{address}/metrics")
    if notify_url:
        print(f"every run's end is posted to {where(notify_url)} ({NOTIFY_URL_ENV})")
    print(run_ahead())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    show_in_terminal()  # a line when each chaos run starts and ends
    async with build_worker(client) as worker:
        gauge = asyncio.create_task(watch_injected_faults(client, runtime, task_queue())) if runtime else None
        print(f"worker polling task queue {worker.task_queue!r} on {client.service_client.config.target_host}"
              f" (namespace {client.namespace}); Ctrl-C to stop", flush=True)
        await stop.wait()
        print("shutting down: what watches is handed back to another worker now; an inject, a restore or a load "
              "window in flight gets 5 s to finish")
        if gauge:
            gauge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauge
    return 0


if __name__ == "__main__":
    # uvloop, a drop-in event loop in C: this loop runs every activity (the load generator's operations, the checks,
    # the heartbeats), which on a host with 20 copies waits for a core most of each second (docs/benchmark.md).
    exit_process(uvloop.run(main()))
