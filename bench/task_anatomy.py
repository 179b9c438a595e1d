"""Where a workflow task's time goes inside the worker that runs it.

The history's "worker: workflow code" (WorkflowTaskStarted to WorkflowTaskCompleted, by the server's clock) holds
everything between the server handing the task over and taking the answer back. This splits the worker's part of
it, timed in the worker, for each activation:

- decode: the SDK unpacking the activation's payloads;
- workflow code: our workflow code running (wall and its thread's CPU), payload conversion included;
- encode: the SDK packing the commands;
- complete: handing the completion to the SDK's core, which answers the server and returns when the server has
  taken it (a round trip to the server and its write of the history);
- whole activation: all of the above, and the hops between the event loop and the workflow thread.

And each activity's side (`activity_parts`), so a stage's time in the history (its ActivityTaskStarted to
ActivityTaskCompleted, by the server's clock) can be split the same way:

- ours: decoding the input, the product's interceptors and the activity function (the SDK's `_execute_activity`);
- complete: encoding the result and handing the completion to the core, which returns when the server took it;
- worker: the SDK's whole handling of the task in the worker (the two above and what surrounds them).

It wraps private functions of the Temporal Python SDK (1.35) while the benchmark runs, and only there: a future
SDK that renames one leaves that part empty ("not measured") rather than failing the benchmark.
"""

from __future__ import annotations

import functools
import time

import temporalio.bridge.worker as bridge_worker
import temporalio.worker._activity as activity_worker
import temporalio.worker._workflow as workflow_worker

from bench.measure import summary


class TaskAnatomy:
    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {"decode": [], "workflow code": [], "workflow code CPU": [], "encode": [],
                                           "complete": [], "whole activation": []}
        self._undo: list[tuple[object, str, object]] = []
        # (workflow id, activity type, attempt) -> seconds of each part of that activity task in the worker
        self.activity_parts: dict[tuple[str, str, int], dict[str, float]] = {}

    def _wrap(self, owner: object, name: str, part: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        ms = self.ms[part]

        @functools.wraps(original)
        async def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                ms.append(1000 * (time.perf_counter() - t0))

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def _wrap_activate(self) -> None:
        running = getattr(workflow_worker, "_RunningWorkflow", None)
        original = getattr(running, "activate", None)
        if original is None:
            return
        wall, cpu = self.ms["workflow code"], self.ms["workflow code CPU"]

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                cpu.append(1000 * (time.thread_time() - c0))
                wall.append(1000 * (time.perf_counter() - t0))

        running.activate = timed
        self._undo.append((running, "activate", original))

    def _wrap_activities(self) -> None:
        """Time each activity task's handling, its own code and its completion, keyed by the task's start."""
        worker_cls = getattr(activity_worker, "_ActivityWorker", None)
        handle = getattr(worker_cls, "_handle_start_activity_task", None)
        execute = getattr(worker_cls, "_execute_activity", None)
        complete = getattr(bridge_worker.Worker, "complete_activity_task", None)
        if None in (handle, execute, complete):
            return
        parts = self.activity_parts
        current: dict[bytes, dict[str, float]] = {}  # by task token, while the task is handled

        def key(start) -> tuple[str, str, int]:
            return start.workflow_execution.workflow_id, start.activity_type, start.attempt

        async def timed_handle(worker, task_token, start, *args, **kwargs):
            mine = current[task_token] = parts.setdefault(key(start), {})
            t0 = time.perf_counter()
            try:
                return await handle(worker, task_token, start, *args, **kwargs)
            finally:
                mine["worker"] = time.perf_counter() - t0
                current.pop(task_token, None)

        async def timed_execute(worker, start, running, task_token, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await execute(worker, start, running, task_token, *args, **kwargs)
            finally:
                if (mine := current.get(task_token)) is not None:
                    mine["completing_from"] = ended = time.perf_counter()
                    mine["ours"] = ended - t0

        async def timed_complete(core, completion, *args, **kwargs):
            try:
                return await complete(core, completion, *args, **kwargs)
            finally:
                if (mine := current.get(completion.task_token)) is not None and "completing_from" in mine:
                    mine["complete"] = time.perf_counter() - mine.pop("completing_from")

        for owner, name, original, wrapper in ((worker_cls, "_handle_start_activity_task", handle, timed_handle),
                                               (worker_cls, "_execute_activity", execute, timed_execute),
                                               (bridge_worker.Worker, "complete_activity_task", complete,
                                                timed_complete)):
            setattr(owner, name, functools.wraps(original)(wrapper))
            self._undo.append((owner, name, original))

    def __enter__(self) -> "TaskAnatomy":
        self._wrap(bridge_worker, "decode_activation", "decode")
        self._wrap(bridge_worker, "encode_completion", "encode")
        self._wrap(bridge_worker.Worker, "complete_workflow_activation", "complete")
        self._wrap(workflow_worker._WorkflowWorker, "_handle_activation", "whole activation")
        self._wrap_activate()
        self._wrap_activities()
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def figures(self) -> dict:
        """Milliseconds per activation for each part: n, min, p50, p95, max."""
        return {part: summary([round(v, 3) for v in values]) for part, values in self.ms.items()}
