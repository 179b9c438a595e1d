"""Run a worker: connect (envconfig; the embedded dev server by default), register everything, run until Ctrl-C."""

import asyncio
import signal
import sys

from runtime.connect import exit_process
from runtime.devserver import ServerUnreachable, connect_or_start
from runtime.run_log import show_in_terminal
from runtime.worker import SearchAttributesMissing, build_worker, ensure_search_attributes, retire_reaper_schedule


async def main() -> int:
    try:
        client = await connect_or_start()
        added = await ensure_search_attributes(client)
    except (ServerUnreachable, SearchAttributesMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if added:
        print(f"registered search attributes: {', '.join(added)}")
    if await retire_reaper_schedule(client):
        print("deleted the reaper schedule of earlier versions: every fault now has a guard of its own")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    show_in_terminal()  # a line when each chaos run starts and ends
    async with build_worker(client) as worker:
        print(f"worker polling task queue {worker.task_queue!r} on {client.service_client.config.target_host}"
              f" (namespace {client.namespace}); Ctrl-C to stop", flush=True)
        await stop.wait()
        print("shutting down: in-flight activities get 5 s to finish, the rest resume on another worker")
    return 0


if __name__ == "__main__":
    exit_process(asyncio.run(main()))
