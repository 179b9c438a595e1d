"""What a run shows while it goes (progress, facts in the memo) and what it returns (the report)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from durable_chaos.contracts.diagnosis import Diagnosis
from durable_chaos.contracts.hypothesis import ProbeResult
from durable_chaos.contracts.names import RECENT_WINDOWS, ErrorType, FaultKind, FaultState, Stage, Verdict
from durable_chaos.contracts.run import Trip
from durable_chaos.contracts.safety import SafetyReport
from durable_chaos.contracts.stages import CheckResult, DetectorResult, LoadSummary, LoadWindow
from durable_chaos.contracts.steps import FaultEffect, StepReport


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
    host: str | None = Field(default=None, description="the Docker host the subject runs on")
    waiting_for_host: str | None = Field(default=None, description="a restore waits for a worker of this host")


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
    diagnosing: bool = Field(default=False, description="a diagnosis made beside the undo has not answered yet: the "
                                                        "live view shows its stage still running")
    message: str = ""
    waiting_for: Stage | None = Field(default=None, description="interactive: the stage held until `advance`")
    fault_deadline: datetime | None = None
    cut_short: str | None = Field(default=None, description="why the experiment was cut short (abort, deadline)")
    verdict: Verdict | None = None
    step: int = Field(default=0, description="the step running now, from 1 (0: none yet)")
    step_count: int = 1
    steps: list[StepReport] = Field(default=[], description="every fault injected so far, as in the report")
    host: str | None = Field(default=None, description="the Docker host the subject runs on (None: runs from before "
                                                       "hosts)")
    waiting_for_host: str | None = Field(default=None, description="no worker of this host has taken the restore "
                                                                   "since `host_waiting_since`: the run waits for one")
    host_waiting_since: datetime | None = None

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
                        diagnosis_correct=self.diagnosis.correct if self.diagnosis else None,
                        host=self.host, waiting_for_host=self.waiting_for_host)


class ChaosReport(BaseModel):
    workflow_id: str
    run_id: str
    subject: str
    project: str
    host: str | None = Field(default=None, description="the Docker host the subject ran on")
    fault: FaultKind
    fault_label: str | None = Field(default=None, description='the kind and its parameters, e.g. "loss 30%"')
    fault_params: dict[str, Any] = {}
    target: str | None = Field(description="the first member hit")
    targets: list[str] = Field(default=[], description="every member hit")
    verdict: Verdict
    reasons: list[str]
    failed_because: list[str] = Field(default=[], description="why the verdict is not pass, worst first (empty on "
                                                             "a pass)")
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
    hypothesis: list[ProbeResult] = Field(default=[], description="each probe of the hypothesis, as measured")
    detectors: list[DetectorResult] = Field(default=[], description="time to detect per detector, ours first (only "
                                                                    "when the run watched the user's monitoring)")
    effect: FaultEffect | None = Field(default=None, description="what the first fault did while it was on, as its "
                                                                 "kind confirms it (None: not asked, or a run from "
                                                                 "before this field)")
    steps: list[StepReport] = Field(default=[], description="every fault the run injected, in order, with its TTD "
                                                            "and TTR (the top-level times are the first one's)")
    seed: int | None = Field(default=None, description="a random schedule's seed: `--seed` replays the schedule")
    on_at_first_violation: list[str] = Field(default=[], description="the faults that were on when the first "
                                                                     "violation was seen (random schedules)")

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


# A run whose verdict is fail ends *Failed* (not Completed), so the web UI's list shows it without opening it: the
# failure is an ApplicationError of this type, and its one detail is the report, which nothing else loses.
def verdict_failure(report: ChaosReport) -> ApplicationError:
    first = next(iter(report.failed_because or report.reasons), "no reason given")
    return ApplicationError(f"verdict fail: {first}", report, type=ErrorType.VERDICT_FAIL, non_retryable=True)


def report_of_failure(err: BaseException) -> ChaosReport | None:
    """The report a run failed with because its verdict was fail (through a client's WorkflowFailureError or a
    parent's ChildWorkflowError); None for any other failure."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.VERDICT_FAIL and cause.details:
            detail = cause.details[0]
            return detail if isinstance(detail, ChaosReport) else ChaosReport.model_validate(detail)
        cause = getattr(cause, "cause", None)
    return None


async def final_report(handle: Any, **result_args: Any) -> ChaosReport:
    """A closed run's report, whatever its verdict (a failed verdict arrives as the run's failure)."""
    # Here, not at the top: whoever has a handle has loaded Temporal's client already, and `check` (which reads a
    # file, and imports these contracts for the safety report) then never has to (0.18 s).
    from temporalio.client import WorkflowFailureError

    try:
        return await handle.result(**result_args)
    except WorkflowFailureError as err:
        report = report_of_failure(err)
        if report is None:
            raise
        return report
