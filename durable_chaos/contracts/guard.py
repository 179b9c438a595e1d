"""The fault guard and the reaper: what a closed run left injected, and what was done about it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from durable_chaos.contracts.names import FaultState
from durable_chaos.contracts.stages import FaultRequest


class ReapRequest(BaseModel):
    task_queue: str = Field(description="only runs of this task queue (one reaper per fleet)")
    lookback_hours: float = Field(default=24.0, gt=0)


class OrphanedFault(BaseModel):
    workflow_id: str
    run_id: str
    status: str
    fault: FaultRequest
    busy: bool = Field(default=False, description="a newer run holds the subject: its own restore owns the node")


class ReapAction(BaseModel):
    workflow_id: str
    run_id: str
    target: str
    action: Literal["restored", "already healthy", "skipped: subject busy", "subject gone"]
    healthy_after: bool | None = None


class ReapReport(BaseModel):
    found: int
    actions: list[ReapAction]


class GuardRequest(BaseModel):
    """One chaos run to watch until it closes, and the fault it injects."""

    workflow_id: str
    run_id: str
    fault: FaultRequest


class RunClosed(BaseModel):
    status: str = Field(description="how the run closed: COMPLETED, FAILED, CANCELED, TERMINATED, TIMED_OUT, ...")
    fault_state: FaultState | None = Field(description="its last ChaosFaultState; None if the run is gone")


class GuardReport(BaseModel):
    run_status: str
    fault_state: FaultState | None
    action: ReapAction | None = Field(default=None, description="None: the run undid its own fault")
