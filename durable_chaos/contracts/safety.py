"""The data-safety check: its request and its report (the history itself stays a file on the worker)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from durable_chaos.contracts.run import SubjectRef

SafetyVerdict = Literal["ok", "violated", "unknown"]


class OpView(BaseModel):
    """One operation of the history, as a report shows it (a counterexample's ops)."""

    kind: str
    key: str | None = None
    value: str | None = None
    outcome: Literal["ok", "fail", "info"]
    invoked_at: datetime
    latency_ms: float
    token: int | None = Field(default=None, description="what the system returned: revision, sequence, txid")
    error: str | None = None
    final: bool = Field(default=False, description="a read of the final read phase, after restore")


class Counterexample(BaseModel):
    checker: str
    summary: str
    ops: list[OpView] = Field(description="the operations involved, by invoke time")


class SafetyCheck(BaseModel):
    """What one checker found."""

    name: str
    verdict: SafetyVerdict
    detail: str


class PhaseLatency(BaseModel):
    ops: int = Field(default=0, description="operations sent in this phase (their invoke time)")
    errors: int = Field(default=0, description="fail and info among them")
    p50_ms: float | None = None
    p99_ms: float | None = None
    longest_gap_ms: float | None = Field(default=None, description="longest time without a successful operation "
                                                                   "among those sent in this phase")


class Availability(BaseModel):
    """How well clients were served, from every operation sent (failed ones included: latency is measured from
    when an operation was due, so a slow system cannot hide behind a waiting client)."""

    longest_gap_ms: float | None = Field(default=None, description="longest time without a successful operation")
    longest_gap_from: datetime | None = None
    error_rate: float | None = Field(default=None, description="(fail + info) / operations sent")
    capped: int = Field(default=0, description="operations not sent because the concurrency cap was reached")
    before: PhaseLatency = PhaseLatency()
    during: PhaseLatency = Field(default=PhaseLatency(), description="inject until healthy again")
    after: PhaseLatency = PhaseLatency()


class SafetyRequest(BaseModel):
    subject: SubjectRef
    check_timeout_s: float
    windows: int = Field(description="load windows the workflow saw: their history parts should all be here")
    fault_started_at: datetime | None = None
    fault_ended_at: datetime | None = Field(default=None, description="healthy again after restore")


class SafetyReport(BaseModel):
    verdict: SafetyVerdict
    reasons: list[str] = Field(default=[], description="why that verdict, one line each")
    checks: list[SafetyCheck] = []
    ops: int = Field(default=0, description="operations sent by the load (the final read not included)")
    acked_writes: int = 0
    lost_writes: int = Field(default=0, description="acknowledged writes missing from the final read")
    keys: int = Field(default=0, description="keys written, each read back in the final read phase")
    counterexample: Counterexample | None = None
    availability: Availability | None = None
    history: str | None = Field(default=None, description="the run's operation history (gzipped JSON lines)")
    history_bytes: int = 0
    check_s: float | None = Field(default=None, description="time the checkers took")
