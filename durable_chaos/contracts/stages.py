"""The requests and results of the run's stages: preflight, checks, detection, the fault, the load windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from durable_chaos.contracts.hypothesis import Probe, ProbeSample
from durable_chaos.contracts.names import DEFAULT_LOAD_RATE, FaultKind
from durable_chaos.contracts.run import ExternalDetector, SlowRule, StopConditions, SubjectRef, Trip
from durable_chaos.contracts.steps import FaultStep, Step


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
    latency_ms: dict[str, float] = Field(default={}, description="service -> how long its probe took to answer, "
                                                                "for every member that answered")


class SlowWatch(SlowRule):
    """The run's slow rule with each member's baseline probe latency, the median of preflight's checks."""

    baseline_ms: dict[str, float] = {}


class SubjectDefaults(BaseModel):
    """What depends on the system: a Patroni failover takes longer than an etcd re-election, and its probes are
    slower."""

    detect_timeout_s: float = 30.0
    restore_timeout_s: float = 90.0
    slow: SlowRule = SlowRule()


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
    steps: list[Step] = Field(default=[], description="every step, checked before anything starts (the first "
                                                      "fault is the fields above)")
    slow: SlowRule | None = Field(default=None, description="the run's own slow rule; the subject's if unset")


class TargetChoice(BaseModel):
    """Who a run may hit, resolved in preflight (roles are read from the system there); the workflow then draws
    `count` members (workflows/chaos/plan.py): every one of `must`, the rest at random from `pool`."""

    must: list[str] = Field(default=[], description="members that are hit for sure (a named target, the leader)")
    pool: list[str] = Field(default=[], description="members the rest are drawn from")
    count: int = 1


class PreflightResult(BaseModel):
    subject: str
    project: str
    services: list[str]
    targets: list[str]
    started_subject: bool
    baseline: CheckResult
    defaults: SubjectDefaults = SubjectDefaults()
    choice: TargetChoice
    fault_label: str = Field(description='the kind and its parameters, e.g. "loss 30%"')
    spare: int = Field(default=1, description="members the subject's quorum rule can lose at once: the most a "
                                              "random schedule may hit together")
    notify_worker: bool = Field(default=False, description="the worker has CHAOS_NOTIFY_URL: the run's end is posted "
                                                           "there too (the URL itself never enters the history)")
    slow: SlowWatch | None = Field(default=None, description="when a member counts as slow, with its baseline "
                                                           "(None in runs from before slow detection)")


class WaitHealthyRequest(BaseModel):
    subject: SubjectRef
    timeout_s: float
    check_timeout_s: float
    # A restored member answers tens of milliseconds after `docker start` returns: a check that comes too early
    # fails fast, and the next one waits this long (0.25 s made the time to restore 0.2 s longer whenever the first
    # check came early, as it does in a plain script: bench's overhead stages).
    interval_s: float = 0.1
    slow: SlowWatch | None = Field(default=None, description="healthy also means no member slow (None: not asked)")


class DetectRequest(BaseModel):
    subject: SubjectRef
    interval_s: float
    timeout_s: float
    check_timeout_s: float
    slow: SlowWatch | None = Field(default=None, description="a member slow for this many checks is a violation")


class DetectResult(BaseModel):
    detected: bool
    detected_at: datetime | None = None
    first_violation: CheckResult | None = None
    checks: int = 0
    timeline: list[CheckResult] = Field(default=[], description="recent checks, oldest first (capped)")
    slow: dict[str, str] = Field(default={}, description="service -> how slow it was, for members detected slow "
                                                        "(answering, but far above their baseline)")


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
    began_at: datetime | None = Field(default=None, description="when the inject that put the fault in place began: "
                                      "load sent from then on may meet the fault (None: a retry found it in place)")
    already_down: bool = Field(default=False, description="the fault was already in effect on every target (a retry)")
    targets: list[str] = []

    @property
    def fault_began(self) -> datetime:
        """From when the load may have met the fault: the inject's start, or its end when a retry found it in place.
        The load's baseline, the diagnosis's load impact and the safety check's phases all split here."""
        return self.began_at or self.injected_at


class RestoreResult(BaseModel):
    target: str
    started_at: datetime = Field(description="when the attempt that undid the fault started")
    attempt: int = Field(default=1, description="the attempt that undid it: more than 1 when earlier ones failed")
    first_attempt_at: datetime | None = Field(default=None, description="when the first attempt was scheduled, if "
                                                                         "this is not the first")
    already_up: bool = Field(default=False, description="nothing was in effect any more (e.g. the member restarted)")
    container_gone: bool = Field(default=False, description="the subject was torn down: nothing left to restore")
    repaired: list[str] = Field(default=[], description="members that could not start on what their disk held, and "
                                                        "how the undo brought each back (storage faults)")

    @property
    def began_at(self) -> datetime:
        """When the undo began: its first attempt, however many it took (time to restore counts from here)."""
        return self.first_attempt_at or self.started_at


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
    rate: float | None = Field(default=None, description="the rate it was asked to send at, ops/s (None: a window of "
                               "a run from before this field)")
    tripped: Trip | None = Field(default=None, description="a stop condition this window tripped")
    probes: dict[str, list[ProbeSample]] = Field(default={}, description="the hypothesis's sampled probes, by "
                                                 "label: what each answered in this window (activities/sampling.py)")


def split_at(windows: list[LoadWindow], instant: datetime) -> tuple[list[LoadWindow], list[LoadWindow]]:
    """The windows that ended by `instant` (the fault's start: the load's steady state) and those that ended after
    it (every window that saw the fault, even in part)."""
    return [w for w in windows if w.end <= instant], [w for w in windows if w.end > instant]


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
    probes: list[Probe] = Field(default=[], description="the hypothesis's probes that ask something (http, exec, "
                                                       "promql): each is asked once in the window")


# Below this share of the rate it was asked, the load before the fault hardly ran (LoadSummary.hardly_ran).
STARVED_SHARE = 0.5


class LoadSummary(BaseModel):
    windows: list[LoadWindow] = []
    baseline_ops_s: float | None = None
    asked_ops_s: float | None = Field(default=None, description="the rate the windows before the fault were asked")
    worst_fault_ops_s: float | None = None
    errors: int = 0

    @property
    def hardly_ran(self) -> bool:
        """The load before the fault answered less than half what it was asked: a subject that cannot keep up, or
        a worker carrying many runs, left the run's safety and availability figures those of a lighter load."""
        return (self.baseline_ops_s is not None and bool(self.asked_ops_s)
                and self.baseline_ops_s < STARVED_SHARE * self.asked_ops_s)


class ChooseRequest(BaseModel):
    """Who a fault step hits, decided when the step begins: the roles are read then (the leader may have moved)."""

    subject: SubjectRef
    step: FaultStep
    busy: list[str] = Field(default=[], description="members other faults hold now: never drawn again")
    check_timeout_s: float = 0.5


class FaultPlan(BaseModel):
    choice: TargetChoice
    fault_label: str
