"""A worker for the resume measurement: the product's worker, except that the first attempt of one activity waits
`BENCH_HOLD_S` seconds before it runs (`BENCH_HOLD=activity_name`).

Most stages take a fraction of a second, too short to SIGKILL a worker inside them on purpose. Holding the first
attempt makes "the worker died during this stage" a point the benchmark can hit every time; the retry on the other
worker runs unheld, and the time from the SIGKILL to that retry is what `bench/resume.py` measures. The worker
heartbeats through the hold as through any slow stage.

    TEMPORAL_ADDRESS=... CHAOS_TASK_QUEUE=... BENCH_HOLD=restore_fault BENCH_HOLD_S=5 python -m bench.held_worker
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from durable_chaos.runtime.connect import task_queue
from durable_chaos.hosts import default_host
from durable_chaos.runtime.worker import serve


class _Hold(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, name: str, seconds: float):
        super().__init__(next)
        self.name, self.seconds = name, seconds

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == self.name and info.attempt == 1:
            await asyncio.sleep(self.seconds)
        return await super().execute_activity(input)


class Hold(Interceptor):
    def __init__(self, name: str, seconds: float):
        self.name, self.seconds = name, seconds

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Hold(next, self.name, self.seconds)


async def main() -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter)
    hold = Hold(os.environ.get("BENCH_HOLD", ""), float(os.environ.get("BENCH_HOLD_S", "5")))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with serve(client, default_host(), task_queue(), interceptors=[hold]):
        print(f"worker polling task queue {task_queue()!r} as {client.identity}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
