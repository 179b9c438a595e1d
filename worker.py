"""Run a worker: connect (envconfig; the embedded dev server by default), register everything, run until Ctrl-C."""

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import datetime, timezone

import uvloop
from python_on_whales import DockerException

from activities.notify import NOTIFY_URL_ENV, where, worker_notify_url
from durable_chaos import admission
from durable_chaos.cli.errors import EXIT_HOST_ENGINE_CHANGED
from durable_chaos.contracts import WorkerSeen
from durable_chaos.faults.powerfs import LayerError, remove_layers_of_gone_copies
from durable_chaos.hosts import check_host_name, default_host
from durable_chaos.ids import host_queue
from durable_chaos.runtime.connect import exit_process, task_queue
from durable_chaos.runtime.devserver import ServerUnreachable, connect_or_start
from durable_chaos.runtime.fleet import EngineChanged, docker_endpoint, engine_identity, register
from durable_chaos.runtime.metrics import metrics_address, metrics_runtime, watch_injected_faults
from durable_chaos.runtime.priority import run_ahead
from durable_chaos.runtime.run_log import show_in_terminal
from durable_chaos.runtime.server_setup import SearchAttributesMissing, ensure_search_attributes, retire_reaper_schedule
from durable_chaos.runtime.worker import serve


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python worker.py",
        description="Serve chaos runs: connect to Temporal (TEMPORAL_ADDRESS, TEMPORAL_PROFILE, ...; the embedded dev "
                    "server by default) and run workflows and activities until Ctrl-C. Each Docker host of a fleet "
                    "runs one (or more) with --host, against that host's engine (DOCKER_HOST or the current Docker "
                    "context).",
        epilog="Exit codes: 2 bad settings, 3 Temporal or Docker unreachable, 7 the host name was first seen with "
               "another Docker engine.")
    parser.add_argument("--host", help="the Docker host this worker serves (runs name it with `chaos --host`). "
                                       "Without it: this machine's name (CHAOS_HOST overrides it), and the worker "
                                       "also serves runs from before hosts and any subject folder a run names")
    parser.add_argument("--subjects", help="with --host: the subjects it serves, comma-separated (default: the "
                                           "shipped ones, plugins, and the folders on its CHAOS_SUBJECT_PATH)")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:  # the worker's own settings: a typo must stop it here, not surface in the first run's end
        address, notify_url = metrics_address(), worker_notify_url()
        host = check_host_name(args.host) if args.host else default_host()
        if args.subjects and not args.host:
            raise ValueError("--subjects needs --host (a worker without it serves whatever its runs name)")
        if args.host:  # a fleet's worker: only what it is configured for (durable_chaos/admission.py)
            admission.configure(admission.for_host(
                [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    docker_host = docker_endpoint()
    try:
        engine_id, engine_version = await engine_identity()
    except Exception as err:  # noqa: BLE001 - whatever the engine said, in one line
        if args.host:
            print(f"error: the Docker engine at {docker_host} does not answer: {err}", file=sys.stderr)
            return 3
        engine_id = engine_version = None  # as before hosts: a run says Docker is unreachable when it needs it
    runtime = metrics_runtime(address) if address else None
    try:
        client = await connect_or_start(runtime=runtime)
        added = await ensure_search_attributes(client)
        if engine_id is not None:
            new = await register(client, task_queue(), WorkerSeen(
                identity=client.identity, host=host, engine_id=engine_id, engine_version=engine_version,
                docker_host=docker_host, started_at=datetime.now(timezone.utc), admission=admission.current()))
            if new:
                print(f"host {host!r} registered with Docker engine {engine_id}")
    except (ServerUnreachable, SearchAttributesMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except EngineChanged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_HOST_ENGINE_CHANGED
    if added:
        print(f"registered search attributes: {', '.join(added)}")
    if await retire_reaper_schedule(client):
        print("deleted the reaper schedule of earlier versions: every fault now has a guard of its own")
    if engine_id is not None:
        await remove_stale_layers()
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
    async with serve(client, host, own_host_only=args.host is not None) as worker:
        gauge = asyncio.create_task(watch_injected_faults(client, runtime, task_queue())) if runtime else None
        engine = f"engine {engine_id[:12]}, Docker {engine_version}" if engine_id else "engine not reachable now"
        print(f"worker polling task queue {worker.task_queue!r} on {client.service_client.config.target_host}"
              f" (namespace {client.namespace}), and {host_queue(worker.task_queue, host)!r} for host {host} "
              f"({docker_host}, {engine}); Ctrl-C to stop", flush=True)
        await stop.wait()
        print("shutting down: what watches is handed back to another worker now; an inject, a restore or a load "
              "window in flight gets 5 s to finish")
        if gauge:
            gauge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauge
    return 0


async def remove_stale_layers() -> None:
    """The power-loss layers (helpers, mounts, folders) of subject copies taken down by hand: nothing else would
    ever remove them. Said, not fatal: the worker serves runs either way."""
    try:
        gone = await asyncio.to_thread(remove_layers_of_gone_copies)
    except (LayerError, DockerException) as err:
        print(f"warning: could not remove the power-loss layers of copies that are gone: {err}", file=sys.stderr)
        return
    for project in gone:
        print(f"removed the power-loss layers of subject copy {project!r}: it has no container any more")


if __name__ == "__main__":
    # uvloop, a drop-in event loop in C: this loop runs every activity (the load generator's operations, the checks,
    # the heartbeats), which on a host with 20 copies waits for a core most of each second (docs/benchmark.md).
    exit_process(uvloop.run(main(sys.argv[1:])))
