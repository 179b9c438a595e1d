"""What a chaos run has recorded so far: activity results and the decisions taken on them.

Kept apart from the view (view.py, what the UI shows) because the verdict (verdict.py) is a function of these
records alone, and unit tests build one by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        CheckResult,
        DetectorResult,
        DetectResult,
        Diagnosis,
        FaultEffect,
        FaultRequest,
        FaultState,
        InjectResult,
        LoadWindow,
        RestoreResult,
        StepReport,
        Trip,
    )


def seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


@dataclass
class FaultRecord:
    """One fault the run injects: which step it belongs to, what it hits, and what happened to it."""

    step: int
    lane: int | None
    name: str
    request: FaultRequest
    label: str
    max_fault_s: float
    state: FaultState = FaultState.NONE
    deadline: datetime | None = None
    injected: InjectResult | None = None
    detection: DetectResult | None = None
    effect: FaultEffect | None = None
    diagnosis: Diagnosis | None = None
    restore: RestoreResult | None = None
    final: CheckResult | None = None
    detail: str = ""
    drawn_at_s: float | None = None  # a random schedule's fault: its offset from the step's start, as drawn

    @property
    def random(self) -> bool:
        """Drawn by a random schedule: held for its time, not required to be detected."""
        return self.drawn_at_s is not None

    @property
    def on(self) -> bool:
        return self.state == FaultState.INJECTED

    @property
    def restored(self) -> bool:
        return self.state == FaultState.RESTORED

    @property
    def what(self) -> str:
        return f"{self.label} {', '.join(self.request.members)}"

    def report(self) -> StepReport:
        injected_at = self.injected.injected_at if self.injected else None
        detected_at = self.detection.detected_at if self.detection else None
        return StepReport(
            step=self.step, lane=self.lane, name=self.name, fault=self.request.fault, fault_label=self.label,
            targets=self.request.members, state=self.state, injected_at=injected_at, detected_at=detected_at,
            restored_at=self.final.at if self.final else None, time_to_detect_s=seconds(injected_at, detected_at),
            time_to_restore_s=seconds(self.restore.began_at, self.final.at) if self.restore and self.final else None,
            effect=self.effect, diagnosis_correct=self.diagnosis.correct if self.diagnosis else None,
            detail=self.detail, drawn_at_s=self.drawn_at_s)


@dataclass
class Record:
    windows: list[LoadWindow] = field(default_factory=list)
    load_rounds: int = 0  # load windows finished, lost ones included
    faults: list[FaultRecord] = field(default_factory=list)  # in the order they were injected
    reasons: list[str] = field(default_factory=list)  # what happened on the way, in order; the verdict adds its own
    trip: Trip | None = None  # the stop condition that tripped first
    theirs: dict[str, DetectorResult] = field(default_factory=dict)  # the user's detectors that concluded, by name
    seed: int | None = None  # a random schedule's seed
    step_failed: str | None = None  # a step that could not go on (a check that failed)
    internal_error: bool = False  # a bug in the run's own code stopped part of it: never a pass
    final: CheckResult | None = None  # the last check after an undo: every invariant held again then

    # The first fault is the run's headline (top-level times, search attributes, the one-fault report fields).
    @property
    def first(self) -> FaultRecord | None:
        return self.faults[0] if self.faults else None

    @property
    def injected(self) -> InjectResult | None:
        return self.first.injected if self.first else None

    @property
    def detection(self) -> DetectResult | None:
        return self.first.detection if self.first else None

    @property
    def diagnosis(self) -> Diagnosis | None:
        return self.first.diagnosis if self.first else None

    def open_faults(self) -> list[FaultRecord]:
        return [f for f in self.faults if f.on]
