"""The experiment's stages, each one activity call with its options from the policy table (workflows/policy.py).

No decisions here: what to call next, and what a result means, is the workflow's (workflow.py) and the verdict's
(verdict.py). What each activity does is in `activities/`; the subject's protocol never reaches this package.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.workflow import ParentClosePolicy

from workflows import policy

with workflow.unsafe.imports_passed_through():
    from activities.diagnosis import diagnose, gather_evidence
    from activities.faults import confirm_fault, inject_fault, restore_fault
    from activities.guardrails import wait_external_detection, watch_stop_conditions
    from activities.load import run_load_window
    from activities.probes import choose_targets, detect_violation, preflight, wait_healthy
    from activities.safety import check_safety
    from durable_chaos.contracts import (
        GUARD_WORKFLOW_NAME,
        WORKFLOW_TASK_TIMEOUT,
        ChaosInput,
        CheckResult,
        ChooseRequest,
        DetectorResult,
        DetectRequest,
        DetectResult,
        DiagnoseRequest,
        Diagnosis,
        Evidence,
        EvidenceRequest,
        ExternalDetector,
        ExternalDetectRequest,
        FaultEffect,
        FaultPlan,
        FaultRequest,
        FaultStep,
        GuardRequest,
        InjectResult,
        LoadRequest,
        LoadWindow,
        PreflightRequest,
        PreflightResult,
        RestoreResult,
        SafetyReport,
        SafetyRequest,
        SlowWatch,
        Trip,
        WaitHealthyRequest,
        WatchRequest,
    )
    from durable_chaos.ids import fault_guard_id
    from durable_chaos.wording import condition_labels

# The evidence gets the load windows around the fault, not the whole run's (they are in the history already).
EVIDENCE_LOAD_WINDOWS = 30


async def bring_up(inp: ChaosInput) -> PreflightResult:
    """The steady-state hypothesis: the subject up, every invariant holding, every step's fault and target valid.
    The first step's fault, if it is one, is chosen here (the others when their step begins)."""
    first = inp.experiment_steps()[0].fault or FaultStep()
    req = PreflightRequest(subject=inp.subject, target=first.target, timeout_s=inp.preflight_timeout_s,
                           check_timeout_s=inp.check_timeout_s, fault=first.fault, fault_params=first.params,
                           count=first.count, allow_quorum_loss=first.allow_quorum_loss,
                           stop=inp.stop if inp.stop.on_load or inp.stop.watched else None,
                           detectors=inp.detectors, steps=inp.steps, slow=inp.slow)
    return await workflow.execute_activity(preflight, req, **policy.preflight(inp), **policy.on_host(inp.subject),
                                           summary=f"preflight {inp.subject.name}")


async def load_window(inp: ChaosInput, req: LoadRequest, number: int, retried: bool) -> LoadWindow:
    return await workflow.execute_activity(run_load_window, req, **policy.load_window(inp, retried),
                                           **policy.on_host(inp.subject), summary=f"load window {number}")


async def watch_guardrails(inp: ChaosInput) -> Trip | None:
    """The abort probe and abort query, asked by one long activity that returns when one trips."""
    req = WatchRequest(stop=inp.stop, check_timeout_s=max(inp.check_timeout_s, 2.0))
    return await workflow.execute_activity(watch_stop_conditions, req, **policy.guardrails(inp),
                                           **policy.on_host(inp.subject),
                                           summary=f"guardrails: {'; '.join(condition_labels(inp.stop))}")


async def their_detector(inp: ChaosInput, detector: ExternalDetector, since: datetime) -> DetectorResult:
    req = ExternalDetectRequest(detector=detector, since=since, timeout_s=inp.detect_timeout_s,
                                interval_s=inp.detect_interval_s)
    return await workflow.execute_activity(wait_external_detection, req, **policy.their_detector(inp),
                                           **policy.on_host(inp.subject), summary=f"their detector: {detector.name}")


async def start_guard(fault: FaultRequest, label: str, number: int = 1) -> None:
    """The fault's guard, a child that outlives the run (ABANDON): a terminated run runs no code, its `finally`
    included, and the guard restores what it left injected. Started and awaited before the inject, so no fault is
    ever on without one: one guard per fault (`number`, from 1)."""
    info = workflow.info()
    await workflow.start_child_workflow(
        GUARD_WORKFLOW_NAME, GuardRequest(workflow_id=info.workflow_id, run_id=info.run_id, fault=fault),
        id=fault_guard_id(info.workflow_id, info.run_id, number), parent_close_policy=ParentClosePolicy.ABANDON,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        static_summary=f"guard {label} {', '.join(fault.members)} of {info.workflow_id}",
    )


async def inject(inp: ChaosInput, fault: FaultRequest, what: str) -> InjectResult:
    return await workflow.execute_activity(inject_fault, fault, **policy.inject(inp), **policy.on_host(fault.subject),
                                           summary=what)


async def choose(inp: ChaosInput, step: FaultStep, busy: list[str]) -> FaultPlan:
    """Who a later fault step may hit, with the roles read now; never the members `busy` (other faults on)."""
    req = ChooseRequest(subject=inp.subject, step=step, busy=busy, check_timeout_s=inp.check_timeout_s)
    return await workflow.execute_activity(choose_targets, req, **policy.choose(), **policy.on_host(inp.subject),
                                           summary=f"choose {step.target or 'random'} for {step.fault}")


async def detect(inp: ChaosInput, timeout_s: float | None = None, slow: SlowWatch | None = None) -> DetectResult:
    """Active invariant checks at a short interval until one is violated (a member down, or with `slow` a member
    far slower than its baseline), or the detect timeout passes."""
    timeout_s = timeout_s or inp.detect_timeout_s
    req = DetectRequest(subject=inp.subject, interval_s=inp.detect_interval_s, timeout_s=timeout_s,
                        check_timeout_s=inp.check_timeout_s, slow=slow)
    return await workflow.execute_activity(
        detect_violation, req, **policy.detect(inp), **policy.on_host(inp.subject),
        summary=f"detect: poll every {inp.detect_interval_s:g}s for {timeout_s:g}s")


async def confirm(fault: FaultRequest) -> FaultEffect:
    """Did the fault do anything? Its kind says how to tell (packets its rules dropped, the member down)."""
    return await workflow.execute_activity(confirm_fault, fault, **policy.confirm(), **policy.on_host(fault.subject),
                                           summary=f"confirm {fault.fault} took effect on {', '.join(fault.members)}")


async def gather(inp: ChaosInput, detection: DetectResult, fault_began: datetime,
                 windows: list[LoadWindow]) -> Evidence:
    req = EvidenceRequest(subject=inp.subject, detect=detection, injected_at=fault_began,
                          load_windows=windows[-EVIDENCE_LOAD_WINDOWS:])
    return await workflow.execute_activity(gather_evidence, req, **policy.evidence(), **policy.on_host(inp.subject),
                                           summary="gather evidence")


async def ask_for_diagnosis(inp: ChaosInput, evidence: Evidence) -> Diagnosis:
    """Claude, with the rules engine as the fallback inside the activity (within `diagnosis_deadline_s`)."""
    req = DiagnoseRequest(evidence=evidence, deadline_s=inp.diagnosis_deadline_s)
    return await workflow.execute_activity(diagnose, req, **policy.diagnose(inp), summary="diagnose")


async def undo(fault: FaultRequest, waiting: HostWaiting | None = None) -> RestoreResult:
    """Undo exactly the fault that was injected; idempotent, retried for as long as it takes, and on a host, for
    as long as that host has no worker (`waiting` is told when that begins and ends)."""
    return await on_host_until_taken(restore_fault, fault, fault.subject, policy.undo(),
                                     f"restore {', '.join(fault.members)}", waiting)


class HostWaiting:
    """Told when an activity has waited `policy.HOST_WAIT` on its host's queue with no worker taking it, and when a
    worker took it after all: the run's progress and the guard's details say so."""

    def waiting(self, host: str, since: datetime) -> None:
        pass

    def served(self, host: str) -> None:
        pass


async def on_host_until_taken(activity, arg, subject, config: workflow.ActivityConfig, summary: str,
                              waiting: HostWaiting | None = None):
    """Run `activity` on `subject`'s host, waiting for as long as no worker of that host takes it. A schedule-to-
    start timeout is never retried by the server: it comes back here, which says the run is waiting and schedules
    the activity again, so a worker that comes back hours later still finds it."""
    if subject.host is None:  # a run from before hosts: its own queue, as it always did
        return await workflow.execute_activity(activity, arg, **config, summary=summary)
    config = workflow.ActivityConfig(**config, **policy.on_host(subject), schedule_to_start_timeout=policy.HOST_WAIT)
    since = None
    while True:
        try:
            result = await workflow.execute_activity(activity, arg, **config, summary=summary)
        except ActivityError as err:
            if not (isinstance(err.cause, TimeoutError) and err.cause.type == TimeoutType.SCHEDULE_TO_START):
                raise
            if since is None:
                since = workflow.now() - policy.HOST_WAIT
                if waiting:
                    waiting.waiting(subject.host, since)
            continue
        if since is not None and waiting:
            waiting.served(subject.host)
        return result


async def verify(inp: ChaosInput, timeout_s: float | None = None, slow: SlowWatch | None = None) -> CheckResult:
    """Every invariant holds (again), and with `slow` no member is slow, within the restore timeout or `timeout_s`
    (SubjectUnhealthy otherwise)."""
    timeout_s = timeout_s or inp.restore_timeout_s
    req = WaitHealthyRequest(subject=inp.subject, timeout_s=timeout_s, check_timeout_s=inp.check_timeout_s,
                             slow=slow)
    return await workflow.execute_activity(wait_healthy, req, **policy.verify(timeout_s), **policy.on_host(inp.subject),
                                           summary="verify healthy")


async def check_data_safety(inp: ChaosInput, windows: int, fault_started_at: datetime | None,
                            fault_ended_at: datetime | None) -> SafetyReport:
    """The final read of every key the load wrote, and the checkers over the operation history. One activity does
    both: the history is a file on the worker, never in the workflow's history."""
    req = SafetyRequest(subject=inp.subject, check_timeout_s=inp.check_timeout_s, windows=windows,
                        fault_started_at=fault_started_at, fault_ended_at=fault_ended_at)
    return await workflow.execute_activity(check_safety, req, **policy.safety_check(), **policy.on_host(inp.subject),
                                           summary="final read + safety check")
