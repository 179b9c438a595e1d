"""What became of the faults of a run that closed without its own restore: its fault guards, as the server has them.

A terminated run runs none of its code, so its report never comes; the guard it started before each fault
restores what it left (workflows/reaper.py). `status` of such a run says, per guard, whether it is restoring (and,
if the restore keeps failing, which attempt and why: cli/retries.py) or what it did. Without this, a user who
terminated a run saw only "no report", and had to find the guard in the web UI to learn whether the fault was undone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.service import RPCError

from durable_chaos.cli.retries import Retrying, retrying
from durable_chaos.contracts import GuardReport, GuardRequest
from durable_chaos.ids import fault_guard_id


# The guard's activities once it found the fault left on (workflows/reaper.py restore_left_fault).
RESTORING = ("reap_fault", "wait_healthy")


async def _guards(client: Client, workflow_id: str, run_id: str) -> list[tuple[str, WorkflowExecutionDescription]]:
    """A guard per fault the run injected, numbered from 1, as many as exist: each with its description."""
    found: list[tuple[str, WorkflowExecutionDescription]] = []
    with contextlib.suppress(RPCError):  # the first number with no guard ends the list
        while True:
            guard_id = fault_guard_id(workflow_id, run_id, len(found) + 1)
            found.append((guard_id, await client.get_workflow_handle(guard_id).describe()))
    return found


async def guard_ids(client: Client, workflow_id: str, run_id: str) -> list[str]:
    """The ids of the run's guards (see _guards)."""
    return [guard_id for guard_id, _ in await _guards(client, workflow_id, run_id)]


@dataclass
class GuardState:
    workflow_id: str
    target: str | None  # the fault's target, from its input; None if it could not be read
    status: WorkflowExecutionStatus | None
    report: GuardReport | None = None  # once it completed
    retrying: list[Retrying] = field(default_factory=list)  # its activities that failed at least once
    restoring: bool = False  # its restore (or the health check after it) is under way

    def text(self, now: datetime) -> str:
        """One line, and one more per activity the server is retrying."""
        what = self.target or "the fault"
        if self.status == WorkflowExecutionStatus.RUNNING and self.restoring:
            line = f"fault guard {self.workflow_id}: restoring {what}, which the run left injected"
        elif self.status == WorkflowExecutionStatus.RUNNING:  # it has yet to see how the run left the fault
            line = f"fault guard {self.workflow_id}: checking whether the run left {what} injected"
        elif self.report is not None and self.report.action is None:
            line = f"fault guard {self.workflow_id}: nothing to restore (the run left no fault in place)"
        elif self.report is not None:
            action = self.report.action
            healthy = {True: ", healthy after", False: ", NOT healthy after", None: ""}[action.healthy_after]
            line = f"fault guard {self.workflow_id}: {action.target} {action.action}{healthy}"
        else:
            status = self.status.name.lower() if self.status is not None else "gone"
            line = (f"fault guard {self.workflow_id}: {status}, so nothing restores {what}: "
                    f"`python starter.py reap` does")
        return "\n".join([line, *(f"  retrying {r.text(now)}" for r in self.retrying)])


async def guard_states(client: Client, workflow_id: str, run_id: str) -> list[GuardState]:
    """The run's guards, each as the server has it now."""
    states = []
    for guard_id, desc in await _guards(client, workflow_id, run_id):
        target = None
        with contextlib.suppress(Exception):  # its input names the fault; an unreadable one leaves the line general
            target = ", ".join((await _guard_input(client, guard_id)).fault.members)
        pending = desc.raw_description.pending_activities
        state = GuardState(guard_id, target, desc.status, retrying=retrying(pending),
                           restoring=any(a.activity_type.name in RESTORING for a in pending))
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            with contextlib.suppress(WorkflowFailureError, RPCError):
                state.report = await client.get_workflow_handle(guard_id, result_type=GuardReport).result()
        states.append(state)
    return states


async def _guard_input(client: Client, guard_id: str) -> GuardRequest:
    """The guard's request, from the first event of its history (the describe does not carry a workflow's input; a
    guard's history is a few dozen events)."""
    first = (await client.get_workflow_handle(guard_id).fetch_history()).events[0]
    [request] = await client.data_converter.decode(first.workflow_execution_started_event_attributes.input.payloads,
                                                   [GuardRequest])
    return request


def guard_lines(states: list[GuardState]) -> str:
    now = datetime.now(timezone.utc)
    return "\n".join(s.text(now) for s in states)
