"""The evidence gathered after detection and the diagnosis made from it (Claude or the rules engine)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from durable_chaos.contracts.names import FaultKind
from durable_chaos.contracts.run import SubjectRef
from durable_chaos.contracts.stages import CheckResult, DetectResult, LoadWindow


class Sign(BaseModel):
    """Something a fault kind leaves on a member that Docker's own state does not show (a packet filter, a queueing
    discipline), as the kind itself observed it. Named by its kind, so a new kind needs no field here."""

    kind: FaultKind
    detail: str = Field(description="what was seen, as the system prints it (an `iptables -S` rule, a qdisc line)")


class ContainerState(BaseModel):
    """A member as Docker reports it, plus the signs each fault kind found on it. `status` is Docker's own
    (`paused` for a member frozen by the cgroup freezer: it still reads as running)."""

    service: str
    container: str
    running: bool
    status: str
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    started_at: datetime | None = Field(default=None, description="when its container last started")
    restarted_since_fault: bool = Field(default=False, description="running, and started again after the fault "
                                        "began: it was restarted (a crash, an operator, a fault that restarts it)")
    signs: list[Sign] = Field(default=[], description="the signs fault kinds found on it, in catalog order")


class EvidenceRequest(BaseModel):
    subject: SubjectRef
    detect: DetectResult
    injected_at: datetime | None = Field(default=None, description="logs are read from shortly before this")
    load_windows: list[LoadWindow] = Field(default=[], description="recent load windows, for the load impact")


class MemberLogs(BaseModel):
    """A redacted excerpt of one member's logs: error lines with their context first, then the most recent."""

    service: str
    text: str
    lines_total: int
    lines_kept: int
    truncated: bool


class LoadImpact(BaseModel):
    """What the fault did to client traffic, from the load windows that ended before/after the injection."""

    baseline_ops_s: float | None = None
    fault_ops_s: float | None = Field(default=None, description="mean over the windows since the fault")
    drop_pct: float | None = None
    fault_ops: int = 0
    fault_errors: int = 0
    error_rate: float | None = Field(default=None, description="errors / (ops + errors) since the fault")
    baseline_p95_ms: float | None = None
    fault_p95_ms: float | None = Field(default=None, description="worst p95 since the fault")
    windows_since_fault: int = 0


class Evidence(BaseModel):
    subject: str
    services: list[str]
    quorum: Literal["majority", "all", "one"] = Field(
        default="majority", description="how many members the subject needs to serve (the subject's own rule)")
    notes: str = Field(default="", description="the subject's notes for the diagnosis: how it behaves under faults")
    containers: list[ContainerState]
    timeline: list[CheckResult]
    health_now: CheckResult
    injected_at: datetime | None = None
    logs: list[MemberLogs] = []
    load_impact: LoadImpact | None = None
    slow: dict[str, str] = Field(default={}, description="service -> how slow detection found it: answering, but "
                                                        "far above its own baseline (a gray failure, not down)")


class DiagnoseRequest(BaseModel):
    evidence: Evidence
    deadline_s: float = Field(default=60.0, gt=0, description="overall budget for Claude, SDK retries included")


class DiagnosisFindings(BaseModel):
    """The structured answer asked of Claude (its `output_format`), and the core of every diagnosis."""

    summary: str = Field(description="one or two sentences an on-call engineer reads first")
    root_cause: str
    affected_nodes: list[str] = Field(description="service names of the members at fault, and only those")
    evidence: list[str] = Field(description="the observations the diagnosis rests on")
    suggested_actions: list[str]
    confidence: float = Field(ge=0, le=1)


# Why Claude was not used (Diagnosis.fallback_reason). The values are stable: reports and dashboards key on them.
FallbackReason = Literal[
    "no_api_key", "rate_limited", "overloaded", "server_error", "auth_failed", "bad_request", "timeout",
    "unreachable", "invalid_output", "claude_error",
]


class Diagnosis(DiagnosisFindings):
    source: Literal["claude", "rules"]
    fallback_reason: FallbackReason | None = None
    fallback_detail: str | None = None
    model: str | None = Field(default=None, description="the Claude model that answered")
    unknown_nodes: list[str] = Field(default=[], description="names Claude gave that are not services (dropped)")
    correct: bool | None = Field(default=None, description="graded by the workflow against the node it hit")
