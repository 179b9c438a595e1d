"""The steps of an experiment, as the workflow receives them, and what each step did (its part of the report).

A run is a list of steps, in order; a step is one of: a fault, a wait, a load change, an approval, a check, a
random fault schedule, or parallel lanes (each lane a list of the plain steps). `chaos`'s flags make the one-step
case (`ChaosInput.steps` empty: the fault from its top-level fields).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from durable_chaos.contracts.names import FaultKind, FaultState


class FaultStep(BaseModel):
    """Inject one fault on members chosen when the step begins (roles are read then), hold it, undo it."""

    fault: FaultKind = "kill"
    params: dict[str, Any] = {}
    target: str | None = Field(default=None, description="a member, random, leader or follower")
    count: int = Field(default=1, ge=1)
    allow_quorum_loss: bool = False
    duration_s: float | None = Field(default=None, gt=0, description="hold the fault this long; unset: until it "
                                                                     "is detected (or the detect timeout)")
    max_fault_s: float = Field(default=120.0, gt=0, description="undone at the latest this long after inject")


class RandomSchedule(BaseModel):
    """Faults drawn at random, for `duration_s`: one every `every_s` (the spacing), each held `hold_s`, at most
    `max_at_once` on at a time and never more than the subject's quorum rule can spare. Drawn from `seed` in
    workflow code, so the same seed on the same subject gives the same schedule."""

    duration_s: float = Field(default=60.0, gt=0)
    kinds: list[FaultKind] = Field(default=["kill"], min_length=1)
    targets: list[str] = Field(default=[], description="members it may hit; every target of the subject if empty")
    every_s: float = Field(default=10.0, gt=0, description="seconds from one fault's start to the next one's")
    hold_s: float = Field(default=5.0, gt=0, description="how long each fault stays on")
    max_at_once: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, description="drawn by the run when unset; the report records it")


# What a step can be, as the fields that say so (exactly one is set; a wait may also be until steady).
KINDS = ("fault", "wait_s", "until_steady", "load_rate", "approval", "check", "lanes", "random")


class LaneStep(BaseModel):
    """A step that a parallel lane can hold: exactly one of the fields below is set."""

    name: str = ""
    fault: FaultStep | None = None
    wait_s: float | None = Field(default=None, gt=0, description="wait this long")
    until_steady: bool = Field(default=False, description="wait until every invariant holds")
    load_rate: float | None = Field(default=None, gt=0, description="change the load's rate from here on")
    approval: str | None = Field(default=None, description="hold until someone sends `advance`; the text says "
                                                           "what to look at")
    check: bool = Field(default=False, description="every invariant must hold now, or the run fails")

    @property
    def kind(self) -> str:
        given = self._given()
        if given == ["until_steady"] or given == ["wait_s", "until_steady"]:
            return "wait"
        return {"fault": "fault", "wait_s": "wait", "load_rate": "load", "approval": "approval", "check": "check",
                "lanes": "parallel", "random": "random"}[given[0]] if given else "nothing"

    def _given(self) -> list[str]:
        return [k for k in KINDS if k in type(self).model_fields and getattr(self, k) not in (None, False, [])]

    @model_validator(mode="after")
    def _one_kind(self) -> "LaneStep":
        # A wait may be both: until steady, for at most `wait_s`.
        given = self._given()
        if len(given) > 1 and given != ["wait_s", "until_steady"]:
            raise ValueError(f"a step does one thing; this one has {' and '.join(given)}")
        if not given:
            raise ValueError("a step must do something: fault, wait, load, approval, check, parallel or random")
        return self


class Step(LaneStep):
    lanes: list[list[LaneStep]] = Field(default=[], description="parallel lanes, each a list of steps run in order; "
                                                                "the step ends when every lane has")
    random: RandomSchedule | None = None



class FaultEffect(BaseModel):
    """Whether an injected fault really did something, as its kind confirms it (packets its rules dropped, the
    member down), read while it was on."""

    took_effect: bool
    evidence: list[str] = []


class StepReport(BaseModel):
    """One fault the run injected: where it was in the experiment, what it hit, and its times."""

    step: int = Field(description="its step's number, from 1")
    lane: int | None = Field(default=None, description="its lane's number, from 1, in a parallel step")
    name: str = ""
    fault: FaultKind
    fault_label: str
    targets: list[str]
    state: FaultState
    injected_at: datetime | None = None
    detected_at: datetime | None = None
    restored_at: datetime | None = None
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    effect: FaultEffect | None = Field(default=None, description="None: not asked (the run was cut short first)")
    diagnosis_correct: bool | None = None
    detail: str = ""
    drawn_at_s: float | None = Field(default=None, description="a random schedule's fault: when the seed drew it, in "
                                                              "seconds from its step's start (the same for a seed)")
