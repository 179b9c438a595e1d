"""Data contracts shared by the workflow, the activities and the CLI.

Every value that crosses a Temporal boundary (workflow input, activity input/output, query result, report) is a
pydantic model defined here, serialised by `temporalio.contrib.pydantic.pydantic_data_converter`. Keeping them in
one module means the workflow sandbox, the worker and the starter can never disagree about a field.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

TASK_QUEUE = "chaos-runs"
WORKFLOW_NAME = "ChaosDemoWorkflow"
SCHEDULED_WORKFLOW_NAME = "ScheduledChaosWorkflow"
GUARD_WORKFLOW_NAME = "FaultGuardWorkflow"
NOTIFY_WORKFLOW_NAME = "NotifyWorkflow"
# The live view draws this many of the latest load windows; the full list is in the report.
RECENT_WINDOWS = 30
# Workflow tasks here are tiny; if a worker dies holding one, the server hands it to another worker after this
# long (Temporal's default is 10 s, which would dominate resume time after a crash). A new worker replays the whole
# history inside one task; the busy-host benchmark reports the longest task (0.12 s beside stress-ng).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=1)


class Stage(str, Enum):
    PREFLIGHT = "preflight"
    COUNTDOWN = "countdown"
    INJECT = "inject"
    DETECT = "detect"
    DIAGNOSE = "diagnose"
    RESTORE = "restore"
    VERIFY = "verify"
    SAFETY = "safety"  # final read and the data safety check
    DONE = "done"
    FAILED = "failed"


class FaultState(str, Enum):
    NONE = "none"
    INJECTED = "injected"
    RESTORED = "restored"


# 100 ops/s resolves an outage to about 10 ms and hardly loads the subject, a minute of it (6000 ops) is checked in
# under 0.1 s (bench/safety.py) and its history takes about 120 KiB.
DEFAULT_LOAD_RATE = 100.0
# A sanity bound: a chaos run's client shows what a fault does to traffic; saturating the system is a load tool's job.
MAX_LOAD_RATE = 2000.0

# The name of a fault kind (a key of `faults.CATALOG`, which holds them all). A plain string here: the catalog, not
# this module, knows the kinds and validates them (a run with an unknown kind is refused in preflight, before
# anything is touched).
FaultKind = str
Verdict = Literal["pass", "fail"]


# Search attributes make runs findable in the Temporal UI ("every failed run on etcd"). The worker registers them
# on whatever server it connects to; the embedded dev server is started with them.
class Attr:
    SUBJECT = SearchAttributeKey.for_keyword("ChaosSubject")
    FAULT = SearchAttributeKey.for_keyword("ChaosFault")
    TARGET = SearchAttributeKey.for_keyword("ChaosTarget")
    STAGE = SearchAttributeKey.for_keyword("ChaosStage")
    FAULT_STATE = SearchAttributeKey.for_keyword("ChaosFaultState")
    VERDICT = SearchAttributeKey.for_keyword("ChaosVerdict")
    DETECT_SECONDS = SearchAttributeKey.for_float("ChaosDetectSeconds")
    RESTORE_SECONDS = SearchAttributeKey.for_float("ChaosRestoreSeconds")
    DIAGNOSIS_CORRECT = SearchAttributeKey.for_bool("ChaosDiagnosisCorrect")

    ALL = (SUBJECT, FAULT, TARGET, STAGE, FAULT_STATE, VERDICT, DETECT_SECONDS, RESTORE_SECONDS, DIAGNOSIS_CORRECT)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


class SubjectRef(BaseModel):
    """One running copy of a subject: which definition, which compose project, which host ports."""

    name: str = "etcd"
    folder: str | None = Field(default=None, description="absolute path of a subject folder (a user's own subject); "
                                                         "the worker loads the definition from there")
    project: str | None = Field(default=None, description="compose project name; the subject's default if unset")
    port_base: int | None = Field(default=None, description="first host port; the subject's default if unset")


# ---------------------------------------------------------------------------------------------------------------
# Guardrails: stop conditions and the user's own monitoring


def check_http_url(url: str | None, what: str) -> str | None:
    """An http(s) URL with a host and a valid port, or ValueError naming `what` (an option, a variable) in one line:
    every URL a run will call (monitoring, probes, webhooks) is checked before anything starts."""
    if url is None:
        return None
    parts = urlsplit(url)
    try:
        _ = parts.port  # parsed on access: a port out of range or not a number raises ValueError
    except ValueError as err:
        raise ValueError(f"{what} is not a valid URL ({err}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"{what} is not an http(s) URL with a host: {url!r}")
    return url


class StopConditions(BaseModel):
    """When the blast radius grows past these, the run restores at once and fails with "stopped: <condition>".
    All unset (the default): nothing is watched. Checked from the first load window until restore begins; one that
    trips before the fault stops the run before anything is injected."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate_pct: float | None = Field(default=None, ge=0, le=100, description=(
        "trip when more than this share of the load's operations failed over the last `error_window_s`"))
    error_window_s: float = Field(default=5.0, gt=0, description="the sliding window of the error rate")
    max_p99_ms: float | None = Field(default=None, gt=0, description="trip when a load window's p99 is above this")
    max_unavailable_s: float | None = Field(default=None, gt=0, description=(
        "trip when no load operation has succeeded for this long"))
    abort_probe_url: str | None = Field(default=None, description="an HTTP endpoint that must keep answering 2xx")
    abort_query: str | None = Field(default=None, description="a PromQL instant query that must stay empty or zero")
    prometheus_url: str | None = Field(default=None, description="the Prometheus that answers `abort_query`")
    interval_s: float = Field(default=1.0, gt=0, description="how often the probe and the query are asked")

    @field_validator("abort_probe_url")
    @classmethod
    def _probe(cls, v: str | None) -> str | None:
        return check_http_url(v, "--abort-probe")

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus(cls, v: str | None) -> str | None:
        return check_http_url(v, "--prometheus")

    @model_validator(mode="after")
    def _query_needs_prometheus(self) -> "StopConditions":
        if self.abort_query and not self.prometheus_url:
            raise ValueError("--abort-query needs --prometheus URL (the Prometheus that answers it)")
        return self

    @property
    def on_load(self) -> bool:
        """Conditions read from the load's own figures (checked by each load window)."""
        return any(v is not None for v in (self.max_error_rate_pct, self.max_p99_ms, self.max_unavailable_s))

    @property
    def watched(self) -> bool:
        """Conditions that need asking something outside (checked by the watch activity)."""
        return bool(self.abort_probe_url or self.abort_query)

    def label(self, condition: str) -> str:
        """How a condition (a field name) reads in the run's summary and in its trip: one wording for both."""
        match condition:
            case "max_error_rate_pct":
                return f"error rate > {self.max_error_rate_pct:g}% over {self.error_window_s:g}s"
            case "max_p99_ms":
                return f"p99 > {self.max_p99_ms:g} ms"
            case "max_unavailable_s":
                return f"no successful operation for {self.max_unavailable_s:g}s"
            case "abort_probe_url":
                return f"{self.abort_probe_url} not 2xx"
            case "abort_query":
                return f"{self.abort_query!r} not empty or zero"
        raise ValueError(f"not a stop condition: {condition}")

    def labels(self) -> list[str]:
        """Every condition that is set, as it reads."""
        return [self.label(c) for c in ("max_error_rate_pct", "max_p99_ms", "max_unavailable_s", "abort_probe_url",
                                        "abort_query") if getattr(self, c) not in (None, "")]


class Trip(BaseModel):
    """A stop condition that tripped, with the figures that tripped it. An activity result: in the history."""

    condition: str = Field(description='which one, e.g. "error rate > 0% over 5s"')
    detail: str = Field(description='the figures, e.g. "12.5% of 40 operations failed"')
    at: datetime

    def reason(self) -> str:
        return f"stopped: {self.condition} ({self.detail})"


class ExternalDetector(BaseModel):
    """The user's own monitoring as a detector: a named alert firing in Prometheus or Alertmanager (their HTTP APIs),
    or an HTTP endpoint turning non-2xx."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["alert", "http"]
    url: str = Field(description="alert: the Prometheus or Alertmanager base URL; http: the endpoint")
    alert: str | None = Field(default=None, description="alert: the alert's name (its `alertname` label)")

    @model_validator(mode="after")
    def _valid(self) -> "ExternalDetector":
        if self.kind == "alert" and not (self.alert and self.url):
            raise ValueError("--detect-alert needs NAME@URL (the alert's name, then the Prometheus/Alertmanager URL)")
        check_http_url(self.url, "--detect-alert URL" if self.kind == "alert" else "--detect-http")
        return self

    @property
    def name(self) -> str:
        return f"alert {self.alert}" if self.kind == "alert" else f"{self.url} non-2xx"


class ExternalDetectRequest(BaseModel):
    detector: ExternalDetector
    since: datetime = Field(description="the fault's injection: the time to detect counts from here")
    timeout_s: float
    interval_s: float = 0.5
    check_timeout_s: float = 2.0


class DetectorResult(BaseModel):
    """One detector's time to detect: ours (the subject's probe) or one of the user's."""

    name: str
    ours: bool = False
    fired: bool
    fired_at: datetime | None = None
    time_to_detect_s: float | None = None
    detail: str = ""


class WatchRequest(BaseModel):
    stop: StopConditions
    check_timeout_s: float = 2.0


class ChaosInput(BaseModel):
    subject: SubjectRef = SubjectRef()
    fault: FaultKind = "kill"
    fault_params: dict[str, Any] = Field(default={}, description="the kind's parameters (validated by its model)")
    target: str | None = Field(default=None, description="a service, or `random`, `leader`, `follower` (the role "
                                                         "is read in preflight); random when unset")
    count: int = Field(default=1, ge=1, description="how many members to hit at once")
    allow_quorum_loss: bool = Field(default=False, description="allow hitting more members than the subject's "
                                                               "quorum rule can spare")
    countdown_s: int = Field(default=3, ge=0)
    detect_interval_s: float = Field(default=0.5, gt=0)
    detect_timeout_s: float | None = Field(default=None, gt=0, description="the subject's default if unset")
    check_timeout_s: float = Field(default=0.5, gt=0)
    load_window_s: float = Field(default=1.0, gt=0)
    load_rate: float = Field(default=DEFAULT_LOAD_RATE, gt=0, le=MAX_LOAD_RATE,
                             description="operations issued per second, whatever the answer times (open loop)")
    load_concurrency: int = Field(default=16, ge=1, description="operations in flight at most; an operation due "
                                                                "while this many are unanswered is not sent")
    preflight_timeout_s: float = Field(default=90.0, gt=0)
    restore_timeout_s: float | None = Field(default=None, gt=0, description="the subject's default if unset")
    max_fault_s: float = Field(default=120.0, gt=0, description="restore starts at the latest this long after inject")
    interactive: bool = Field(default=False, description="pause before each stage until the `advance` update")
    diagnosis_deadline_s: float = Field(default=60.0, gt=0, description="Claude's whole budget, retries included")
    stop: StopConditions = Field(default_factory=StopConditions, description="guardrails: restore at once past these")
    detectors: list[ExternalDetector] = Field(default=[], description="the user's own monitoring, timed beside ours")
    # A run whose verdict is fail still *completes* (its report is the result), so Temporal sees no failure. A
    # schedule created with pause-on-failure sets this, and its ScheduledChaosWorkflow then fails on a fail verdict.
    pause_on_failure: bool = Field(default=False, description="scheduled runs: fail the firing on verdict fail, so "
                                                               "a schedule with pause_on_failure pauses itself")
    notify_url: str | None = Field(default=None, description="POST the run's summary here when it ends (a webhook; "
                                                             "Slack's incoming webhooks read its `text`)")

    @field_validator("notify_url")
    @classmethod
    def _valid_notify_url(cls, url: str | None) -> str | None:
        return check_http_url(url, "notify_url")

    def summary(self, default_project: str | None = None) -> str:
        """One line for the Temporal UI's summary column, e.g. "kill etcd1 on etcd"; names a non-default copy."""
        project = self.subject.project
        where = self.subject.name + (f" (project {project})" if project and project != default_project else "")
        who = self.target or "random"
        who = {"random": "a random member", "leader": "the leader", "follower": "a follower"}.get(who, who)
        if self.count > 1:
            who = f"{self.count} members ({self.target or 'random'})"
        return f"{self.fault} {who} on {where}"

    def start_attributes(self) -> TypedSearchAttributes:
        """What a run is findable by from its first moment; the workflow upserts the rest as it moves."""
        return TypedSearchAttributes([SearchAttributePair(Attr.SUBJECT, self.subject.name),
                                      SearchAttributePair(Attr.FAULT, self.fault)])


# ---------------------------------------------------------------------------------------------------------------
# Probes


class MemberHealth(BaseModel):
    service: str
    healthy: bool
    detail: str = ""


class CheckResult(BaseModel):
    """One evaluation of every invariant of a subject."""

    at: datetime
    ok: bool
    members: list[MemberHealth]
    roles: dict[str, str] = Field(default={}, description="role -> the service holding it now (e.g. leader)")
    violations: list[str] = []


class SubjectDefaults(BaseModel):
    """Timeouts that depend on the system: a Patroni failover takes longer than an etcd re-election."""

    detect_timeout_s: float = 30.0
    restore_timeout_s: float = 90.0


class PreflightRequest(BaseModel):
    subject: SubjectRef
    target: str | None
    timeout_s: float
    check_timeout_s: float
    fault: FaultKind = "kill"
    fault_params: dict[str, Any] = {}
    count: int = 1
    allow_quorum_loss: bool = False
    stop: StopConditions | None = None
    detectors: list[ExternalDetector] = []


class TargetChoice(BaseModel):
    """Who a run may hit, resolved in preflight (roles are read from the system there); the workflow then draws
    `count` members: every one of `must`, the rest at random from `pool`. The draw is in workflow code, so a replay
    or a retry can never hit another member."""

    must: list[str] = Field(default=[], description="members that are hit for sure (a named target, the leader)")
    pool: list[str] = Field(default=[], description="members the rest are drawn from")
    count: int = 1

    def draw(self, randrange) -> list[str]:
        """`randrange` is `workflow.random().randrange`. One draw per member, so a single random target is drawn
        exactly as runs before the fault catalog drew it (their replays stay the same)."""
        picked = list(self.must[:self.count])
        pool = [m for m in self.pool if m not in picked]
        while len(picked) < self.count and pool:
            picked.append(pool.pop(randrange(len(pool))))
        return picked


class PreflightResult(BaseModel):
    subject: str
    project: str
    services: list[str]
    targets: list[str]
    started_subject: bool
    baseline: CheckResult
    defaults: SubjectDefaults = SubjectDefaults()
    choice: TargetChoice | None = Field(default=None, description="None from workers before the fault catalog")
    fault_label: str | None = Field(default=None, description='the kind and its parameters, e.g. "loss 30%"')
    notify_worker: bool = Field(default=False, description="the worker has CHAOS_NOTIFY_URL: the run's end is posted "
                                                           "there too (the URL itself never enters the history)")


class WaitHealthyRequest(BaseModel):
    subject: SubjectRef
    timeout_s: float
    check_timeout_s: float
    interval_s: float = 0.25


class DetectRequest(BaseModel):
    subject: SubjectRef
    interval_s: float
    timeout_s: float
    check_timeout_s: float


class DetectResult(BaseModel):
    detected: bool
    detected_at: datetime | None = None
    first_violation: CheckResult | None = None
    checks: int = 0
    timeline: list[CheckResult] = Field(default=[], description="recent checks, oldest first (capped)")


# ---------------------------------------------------------------------------------------------------------------
# Faults


class FaultRequest(BaseModel):
    subject: SubjectRef
    fault: FaultKind
    target: str = Field(description="the first member hit")
    targets: list[str] = Field(default=[], description="every member hit; requests from before --count hold only "
                                                       "`target`")
    params: dict[str, Any] = {}
    tag: str = Field(default="", description="names what this run puts in place (its iptables chain, its tc "
                                             "handle), so undo and the reaper remove exactly that")

    @property
    def members(self) -> list[str]:
        return self.targets or [self.target]


class InjectResult(BaseModel):
    target: str
    container: str
    injected_at: datetime
    already_down: bool = Field(default=False, description="the fault was already in effect on every target (a retry)")
    targets: list[str] = []


class RestoreResult(BaseModel):
    target: str
    started_at: datetime
    already_up: bool = Field(default=False, description="nothing was in effect any more (e.g. the member restarted)")
    container_gone: bool = Field(default=False, description="the subject was torn down: nothing left to restore")


def fault_tag(workflow_id: str, run_id: str) -> str:
    """Eight hex digits naming one run's fault (`CHAOS-<tag>` chains): short enough for iptables' 28-character
    chain names, and derived from the run, so every path that undoes it (the run, its guard, the reaper) agrees."""
    return hashlib.sha256(f"{workflow_id}/{run_id}".encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------------------------
# Load


class LoadRequest(BaseModel):
    subject: SubjectRef
    window_s: float
    concurrency: int
    check_timeout_s: float
    rate: float = DEFAULT_LOAD_RATE
    due_from: datetime | None = Field(default=None, description="where the previous window's schedule ended: the "
                                      "operations due since then are sent first (activities/load.py)")
    # Stop conditions on the load's figures: the window checks them as it ends (see activities/guardrails.py).
    stop: StopConditions | None = None
    recent: list[LoadWindow] = Field(default=[], description="the windows before, inside the error rate's window")
    last_ok_before: datetime | None = Field(default=None, description="the last success before this window")
    load_since: datetime | None = Field(default=None, description="when the run's load began")


class LoadWindow(BaseModel):
    start: datetime
    end: datetime
    ops: int
    errors: int
    ops_per_s: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    last_ok_at: datetime | None = Field(default=None, description="when its last successful operation completed")
    tripped: Trip | None = Field(default=None, description="a stop condition this window tripped")


class LoadSummary(BaseModel):
    windows: list[LoadWindow] = []
    baseline_ops_s: float | None = None
    worst_fault_ops_s: float | None = None
    errors: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Diagnosis


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


# ---------------------------------------------------------------------------------------------------------------
# Data safety: the operation history checked after the run (safety/checkers.py)

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


# ---------------------------------------------------------------------------------------------------------------
# Progress and report


def fault_text(fault: str, label: str | None, targets: list[str], target: str | None) -> str:
    """The fault with its parameters and every member it hit, as the live view and every report name it:
    "loss 30% on etcd2", "kill on etcd1, etcd3"."""
    members = ", ".join(targets) or target
    return f"{label or fault} on {members}" if members else (label or fault)


class RunFacts(BaseModel):
    """What a person looks for on a run, kept in its memo as the run moves. A closed run shows its memo in the web
    UI with no worker running; current details and queries need a live worker to answer."""

    subject: str
    fault: FaultKind
    fault_label: str | None = None
    target: str | None = None
    targets: list[str] = []
    fault_state: FaultState
    stage: Stage
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    verdict: Verdict | None = None
    diagnosis_correct: bool | None = None


class Progress(BaseModel):
    """What the `progress` query returns: enough for the CLI to draw the live view."""

    stage: Stage = Stage.PREFLIGHT
    subject: str = ""
    fault: FaultKind = "kill"
    fault_label: str | None = Field(default=None, description='the kind and its parameters, e.g. "loss 30%"')
    target: str | None = None
    targets: list[str] = Field(default=[], description="every member hit (`target` is the first)")
    fault_state: FaultState = FaultState.NONE
    started_at: datetime | None = None
    countdown_left: int | None = Field(default=None, description="whole seconds left, as of the run's last step")
    countdown_ends_at: datetime | None = Field(
        default=None, description="the countdown's one durable timer fires then: viewers count down to it")
    injected_at: datetime | None = None
    detect_deadline: datetime | None = None
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    restore_started_at: datetime | None = None
    windows: int = 0
    recent_windows: list[LoadWindow] = Field(default=[], description=f"the latest {RECENT_WINDOWS}, oldest first")
    diagnosis: Diagnosis | None = None
    message: str = ""
    waiting_for: Stage | None = Field(default=None, description="interactive: the stage held until `advance`")
    fault_deadline: datetime | None = None
    cut_short: str | None = Field(default=None, description="why the experiment was cut short (abort, deadline)")
    verdict: Verdict | None = None

    def countdown_seconds_left(self, now: datetime) -> int | None:
        """Whole seconds until the countdown's one timer fires; runs from before that timer carry only
        `countdown_left`. The workflow (on its replay-safe clock) and the live view (on the wall clock) both ask."""
        if self.countdown_ends_at is None:
            return self.countdown_left
        return max(0, math.ceil((self.countdown_ends_at - now).total_seconds()))

    @property
    def fault_text(self) -> str:
        return fault_text(self.fault, self.fault_label, self.targets, self.target)

    @property
    def last_window(self) -> LoadWindow | None:
        return self.recent_windows[-1] if self.recent_windows else None

    def facts(self) -> RunFacts:
        return RunFacts(subject=self.subject, fault=self.fault, fault_label=self.fault_label, target=self.target,
                        targets=self.targets, fault_state=self.fault_state,
                        stage=self.stage, time_to_detect_s=self.time_to_detect_s,
                        time_to_restore_s=self.time_to_restore_s, verdict=self.verdict,
                        diagnosis_correct=self.diagnosis.correct if self.diagnosis else None)


class ChaosReport(BaseModel):
    workflow_id: str
    run_id: str
    subject: str
    project: str
    fault: FaultKind
    fault_label: str | None = Field(default=None, description='the kind and its parameters, e.g. "loss 30%"')
    fault_params: dict[str, Any] = {}
    target: str | None = Field(description="the first member hit")
    targets: list[str] = Field(default=[], description="every member hit")
    verdict: Verdict
    reasons: list[str]
    started_at: datetime
    finished_at: datetime
    injected_at: datetime | None = None
    detected_at: datetime | None = None
    restored_at: datetime | None = None
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    fault_state: FaultState
    diagnosis: Diagnosis | None = None
    load: LoadSummary = LoadSummary()
    final_check: CheckResult | None = None
    safety: SafetyReport | None = Field(default=None, description="did the cluster lose data? (None: a run "
                                                                  "started before the check existed)")
    stopped: Trip | None = Field(default=None, description="the stop condition that cut the run short")
    detectors: list[DetectorResult] = Field(default=[], description="time to detect per detector, ours first (only "
                                                                    "when the run watched the user's monitoring)")

    @property
    def fault_text(self) -> str:
        return fault_text(self.fault, self.fault_label, self.targets, self.target)


class ScheduledRunResult(BaseModel):
    """What one firing of a schedule did: started a chaos run, or skipped it because the subject was busy."""

    workflow_id: str
    started: bool
    run_id: str | None = None
    verdict: Verdict | None = None
    skipped_reason: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Notifications: a run's summary POSTed to webhooks when it ends


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


class RunNotice(BaseModel):
    """What a run POSTs when it ends: the report's headline, small (no load windows, no operation history).
    `text` is the one or two lines a chat shows: Slack's incoming webhooks (and Mattermost's, Rocket.Chat's) read it."""

    text: str
    workflow_id: str
    run_id: str
    subject: str
    project: str
    fault: FaultKind
    fault_label: str | None = None
    targets: list[str] = []
    verdict: Verdict
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    safety: SafetyVerdict | None = Field(default=None, description="None: no safety check ran")
    diagnosis_correct: bool | None = None
    reasons: list[str] = []
    started_at: datetime
    finished_at: datetime

    @classmethod
    def of(cls, r: ChaosReport) -> RunNotice:
        safety = r.safety.verdict if r.safety else None
        text = (f"chaos run {r.verdict.upper()}: {r.fault_text} (subject {r.subject}), detected in "
                f"{_s(r.time_to_detect_s)}, restored in {_s(r.time_to_restore_s)}, data safety {safety or '-'}\n"
                f"run {r.workflow_id} ({r.run_id})")
        return cls(text=text, workflow_id=r.workflow_id, run_id=r.run_id, subject=r.subject, project=r.project,
                   fault=r.fault, fault_label=r.fault_label, targets=r.targets or [r.target], verdict=r.verdict,
                   time_to_detect_s=r.time_to_detect_s, time_to_restore_s=r.time_to_restore_s, safety=safety,
                   diagnosis_correct=r.diagnosis.correct if r.diagnosis else None, reasons=r.reasons,
                   started_at=r.started_at, finished_at=r.finished_at)


class NotifyRequest(BaseModel):
    notice: RunNotice
    urls: list[str] = Field(default=[], description="the run's own webhooks (--notify)")
    worker_url: bool = Field(default=False, description="also the CHAOS_NOTIFY_URL of the worker that posts")


class NotifyPost(BaseModel):
    notice: RunNotice
    url: str | None = Field(description="None: the posting worker's CHAOS_NOTIFY_URL, read there and only there")


def notify_id(workflow_id: str, run_id: str) -> str:
    """The workflow id of the notifications a chaos run sends when it ends: one per run."""
    return f"{workflow_id}-notify-{run_id}"


def bad_input(message: str) -> ApplicationError:
    """The user's mistake, refused before anything is touched: never retried, and BENIGN, so a worker logs it
    without a traceback (the starter prints it as the one line it is, and may be running the worker itself)."""
    return ApplicationError(message, type=ErrorType.BAD_INPUT, non_retryable=True,
                            category=ApplicationErrorCategory.BENIGN)


class ErrorType:
    """`ApplicationError.type` values the CLI maps to exit codes. All are non-retryable: retrying cannot fix them."""

    BAD_INPUT = "BadInput"  # unknown subject/target/fault, broken compose file -> exit 2
    DOCKER_UNAVAILABLE = "DockerUnavailable"  # -> exit 3
    SUBJECT_UNHEALTHY = "SubjectUnhealthy"  # steady state never reached before the fault -> exit 3
    CONTAINER_GONE = "ContainerGone"  # the target's container no longer exists (subject torn down meanwhile)
    VERDICT_FAIL = "ChaosVerdictFail"  # a scheduled firing whose run failed its verdict (pause-on-failure)


# ---------------------------------------------------------------------------------------------------------------
# Guard and reaper: restore faults of runs that closed without running their compensation (terminate, timeouts).


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


def fault_guard_id(workflow_id: str, run_id: str) -> str:
    """The workflow id of the guard a chaos run starts right before it injects: one guard per run."""
    return f"{workflow_id}-fault-guard-{run_id}"


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
