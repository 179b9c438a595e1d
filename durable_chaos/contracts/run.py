"""What a chaos run is asked to do: the subject, the fault, the guardrails and the user's detectors (the workflow's input)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
)

from durable_chaos.contracts.hypothesis import Probe
from durable_chaos.contracts.names import DEFAULT_LOAD_RATE, MAX_LOAD_RATE, Attr, FaultKind
from durable_chaos.contracts.steps import FaultStep, Step
from durable_chaos.contracts.urls import check_http_url


class SubjectRef(BaseModel):
    """One running copy of a subject: which definition, which compose project, which host ports."""

    name: str = "etcd"
    folder: str | None = Field(default=None, description="absolute path of a subject folder (a user's own subject); "
                                                         "the worker loads the definition from there")
    project: str | None = Field(default=None, description="compose project name; the subject's default if unset")
    port_base: int | None = Field(default=None, description="first host port; the subject's default if unset")
    host: str | None = Field(default=None, description="the Docker host the copy runs on: every activity that touches "
                                                       "it runs on that host's task queue. None: runs started before "
                                                       "hosts existed, whose activities run on the run's own queue")


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


class Trip(BaseModel):
    """A stop condition that tripped, with the figures that tripped it. An activity result: in the history."""

    condition: str = Field(description='which one, e.g. "error rate > 0% over 5s"')
    detail: str = Field(description='the figures, e.g. "12.5% of 40 operations failed"')
    at: datetime


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


class SlowRule(BaseModel):
    """When a member that still answers counts as degraded: its probe answers take longer than `factor` times its
    own baseline (measured in preflight) and at least `floor_ms` more than it, for `checks` checks in a row. The
    floor keeps a 2 ms member from being called slow at 10 ms on a busy host; the run of checks, a single slow
    answer (a GC pause, a busy core) from being called a fault."""

    model_config = ConfigDict(extra="forbid")
    factor: float = Field(default=5.0, gt=1, le=1000, description="times the member's own baseline")
    checks: int = Field(default=3, ge=1, le=100, description="checks in a row over the line")
    floor_ms: float = Field(default=100.0, ge=0, le=60_000, description="at least this much above the baseline")


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
    hypothesis: list[Probe] = Field(default=[], description="what clients may see: the run passes only if every "
                                                            "probe held")
    # A run whose verdict is fail still *completes* (its report is the result), so Temporal sees no failure. A
    # schedule created with pause-on-failure sets this, and its ScheduledChaosWorkflow then fails on a fail verdict.
    pause_on_failure: bool = Field(default=False, description="scheduled runs: fail the firing on verdict fail, so "
                                                               "a schedule with pause_on_failure pauses itself")
    notify_url: str | None = Field(default=None, description="POST the run's summary here when it ends (a webhook; "
                                                             "Slack's incoming webhooks read its `text`)")
    slow: SlowRule | None = Field(default=None, description="when a member counts as slow (degraded); the "
                                                           "subject's default if unset")
    steps: list[Step] = Field(default=[], description="the experiment's steps, in order; empty: one fault step "
                                                      "made of the fields above (what `chaos` runs)")

    @field_validator("notify_url")
    @classmethod
    def _valid_notify_url(cls, url: str | None) -> str | None:
        return check_http_url(url, "notify_url")

    def experiment_steps(self) -> list[Step]:
        """The steps the run takes: its own, or the one fault step its top-level fields describe."""
        return self.steps or [Step(fault=FaultStep(
            fault=self.fault, params=self.fault_params, target=self.target, count=self.count,
            allow_quorum_loss=self.allow_quorum_loss, max_fault_s=self.max_fault_s))]

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
        pairs = [SearchAttributePair(Attr.SUBJECT, self.subject.name), SearchAttributePair(Attr.FAULT, self.fault)]
        if self.subject.host is not None:
            pairs.append(SearchAttributePair(Attr.HOST, self.subject.host))
        return TypedSearchAttributes(pairs)
