"""ChaosHostWorkflow: a Docker host's record, for as long as the host is part of the fleet.

Why a workflow: the fleet has no store of its own but Temporal, and a running workflow's memo is durable, readable
with a describe (no worker needed) and listed by visibility. A worker that starts for a host reads the engine ID
the host was first seen with from the memo, and refuses to start on another engine under the same name; then it
signals what it serves, which the memo keeps for the CLI's checks and the fleet view. `python starter.py workers
--forget NAME` terminates a record.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import HOST_WORKFLOW_NAME, HostRecord, WorkerSeen


@workflow.defn(name=HOST_WORKFLOW_NAME)
class ChaosHostWorkflow:
    def __init__(self) -> None:
        self._latest: WorkerSeen | None = None

    @workflow.run
    async def run(self, record: HostRecord) -> None:
        # Each worker start is a signal and a memo upsert: a long-lived host's history is started anew (its memo
        # carried over) when the server suggests it.
        await workflow.wait_condition(lambda: workflow.info().is_continue_as_new_suggested()
                                      and workflow.all_handlers_finished())
        workflow.continue_as_new(record, memo=workflow.memo())

    @workflow.signal
    def worker_started(self, seen: WorkerSeen) -> None:
        self._latest = seen
        workflow.upsert_memo({"latest_worker": seen.model_dump(mode="json")})

    @workflow.query
    def latest_worker(self) -> WorkerSeen | None:
        return self._latest
