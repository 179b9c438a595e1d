"""What a chaos run has recorded so far: activity results and the decisions taken on them.

Kept apart from the view (view.py, what the UI shows) because the verdict (verdict.py) is a function of these
records alone, and unit tests build one by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import DetectorResult, DetectResult, Diagnosis, InjectResult, LoadWindow, Trip


@dataclass
class Record:
    windows: list[LoadWindow] = field(default_factory=list)
    load_rounds: int = 0  # load windows finished, lost ones included
    injected: InjectResult | None = None
    detection: DetectResult | None = None
    diagnosis: Diagnosis | None = None
    reasons: list[str] = field(default_factory=list)  # what happened on the way, in order; the verdict adds its own
    trip: Trip | None = None  # the stop condition that tripped first
    theirs: dict[str, DetectorResult] = field(default_factory=dict)  # the user's detectors that concluded, by name
