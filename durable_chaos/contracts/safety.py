"""The data-safety check: its request and its report (the history itself stays a file on the worker)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from durable_chaos.contracts.run import SubjectRef

SafetyVerdict = Literal["ok", "violated", "unknown"]


class OpView(BaseModel):
    """One operation of the history, as a report shows it (a counterexample's ops)."""

    kind: str = Field(description="what the client asked: read, write, cas, publish, fetch, drain, txn")
    key: str | None = None
    value: Any = Field(default=None, description="what came back (ok), or what was asked (fail, info)")
    outcome: Literal["ok", "fail", "info"]
    invoked_at: datetime
    completed_at: datetime | None = Field(default=None, description="None: its outcome is unknown (info), so it "
                                                                    "may take effect until the end of time")
    latency_ms: float
    process: int = Field(default=0, description="the client that sent it: a row of the timeline")
    token: int | None = Field(default=None, description="what the system returned: revision, sequence, txid")
    error: str | None = None
    final: bool = Field(default=False, description="a read of the final read phase, after restore")


class CycleEdge(BaseModel):
    """One dependency of a transaction cycle: `source` must come before `target` (indexes into the ops)."""

    source: int
    target: int
    kind: str = Field(description="ww, wr, rw (anti-dependency) or rt (real time)")
    why: str


class Counterexample(BaseModel):
    checker: str
    summary: str
    ops: list[OpView] = Field(description="the operations involved, by invoke time")
    anomaly: str | None = Field(default=None, description="its name: G0, G1c, G-single, lost update...")
    stuck: int | None = Field(default=None, description="the op no legal order can place (an index into ops)")
    cycle: list[CycleEdge] = Field(default=[], description="a transaction cycle, edge by edge")


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
    fault_started_at: datetime | None = Field(default=None, description="when the inject began: operations "
                                              "answered before it are the steady state")
    fault_ended_at: datetime | None = Field(default=None, description="healthy again after restore")


class SafetyReport(BaseModel):
    verdict: SafetyVerdict
    model: str | None = Field(default=None, description="the data model the checkers held the history to: register, "
                                                        "cas-register, queue, list-append")
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
