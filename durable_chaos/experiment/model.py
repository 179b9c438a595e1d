"""An experiment file, as a model: what a user writes in their repository and reviews like code.

Every field has a default, so a file with only `subject: nats` is an experiment (a random member of NATS killed,
the subject's own timeouts). The defaults are the run input's (`ChaosInput`): `chaos`'s flags and these fields read
them from the same place, so a default lives once. The JSON Schema published beside this module
(`experiment.schema.json`) is generated from these models; a test keeps it current.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from durable_chaos.contracts import MAX_LOAD_RATE, ChaosInput, ExternalDetector, Probe, SlowRule, StopConditions


def default(field: str) -> Any:
    """The run input's default for `field`: the one place it is written."""
    return ChaosInput.model_fields[field].get_default(call_default_factory=True)


def described(field: str) -> str | None:
    return ChaosInput.model_fields[field].description


class _Strict(BaseModel):
    # An unknown field is a typo until proven otherwise: refused, with its line.
    model_config = ConfigDict(extra="forbid")


class Load(_Strict):
    rate: float = Field(default=default("load_rate"), gt=0, le=MAX_LOAD_RATE,
                        description=described("load_rate"))


class LaneStep(_Strict):
    """One step. It does one thing: a fault (the default: a step with none of the other keys is a fault), a wait,
    a load change, an approval or a check."""

    name: str = Field(default="", description="what the step is for, shown in the live view and the report")
    fault: str | None = Field(default=None, description="the fault kind: kill (the default), stop, pause, partition, "
                                                        "loss, bandwidth, latency (`starter.py chaos --help`)")
    params: dict[str, Any] = Field(default={}, description="the kind's parameters, e.g. {percent: 30}")
    target: str | None = Field(default=default("target"), description=described("target"))
    count: int = Field(default=default("count"), ge=1, description=described("count"))
    allow_quorum_loss: bool = Field(default=default("allow_quorum_loss"), description=described("allow_quorum_loss"))
    duration: float | None = Field(default=None, gt=0, description="seconds the fault is held, then undone; unset: "
                                                                    "until it is detected (then diagnosed, undone)")
    max_seconds: float = Field(default=default("max_fault_s"), gt=0,
                               description="the fault is undone at the latest this long after it went in")
    wait: float | Literal["steady"] | None = Field(default=None, description="seconds to wait, or `steady`: until "
                                                                             "every invariant holds")
    load: Load | None = Field(default=None, description="change the load from here on, e.g. {rate: 300}")
    approval: str | None = Field(default=None, description="hold until someone sends `advance` (`starter.py "
                                                           "advance`, or the web UI); the text says what to check")
    check: Literal["steady"] | None = Field(default=None, description="`steady`: every invariant must hold now, "
                                                                      "or the run fails")

    @property
    def kinds(self) -> list[str]:
        """What the step does besides a fault (a step with none of these is a fault step)."""
        return [k for k in ("wait", "load", "approval", "check", "parallel", "random")
                if getattr(self, k, None) is not None]

    @model_validator(mode="after")
    def _does_one_thing(self) -> "LaneStep":
        does = self.kinds + (["fault"] if self.fault is not None else [])
        if len(does) > 1:
            raise ValueError(f"a step does one thing; this one has {' and '.join(does)}: make them two steps")
        return self


class RandomFaults(_Strict):
    duration: float = Field(default=60.0, gt=0, description="seconds the schedule runs")
    kinds: list[str] = Field(default=["kill"], min_length=1, description="the fault kinds it draws from")
    targets: list[str] = Field(default=[], description="the members it may hit (default: every target)")
    every: float = Field(default=10.0, gt=0, description="seconds from one fault's start to the next one's")
    hold: float = Field(default=5.0, gt=0, description="seconds each fault stays on")
    max_at_once: int = Field(default=1, ge=1, description="faults on at the same time, at most (never more than "
                                                          "the subject's quorum rule can spare)")
    seed: int | None = Field(default=None, description="the same seed draws the same schedule; `--seed` sets it")


class Step(LaneStep):
    parallel: list[list[LaneStep]] | None = Field(default=None, min_length=2, description="lanes run side by side, "
                                                  "each a list of steps; the step ends when every lane has")
    random: RandomFaults | None = Field(default=None, description="faults drawn at random from a seed")


class Timeouts(_Strict):
    countdown: int = Field(default=default("countdown_s"), ge=0, description="seconds before the first fault")
    detect: float | None = Field(default=default("detect_timeout_s"), gt=0,
                                 description="seconds to wait for detection; " + described("detect_timeout_s"))
    detect_interval: float = Field(default=default("detect_interval_s"), gt=0,
                                   description="seconds between invariant checks while detecting")
    restore: float | None = Field(default=default("restore_timeout_s"), gt=0,
                                  description="seconds the subject has to be healthy again; "
                                              + described("restore_timeout_s"))
    preflight: float = Field(default=default("preflight_timeout_s"), gt=0,
                             description="seconds the subject has to reach its steady state before anything starts")
    diagnosis: float = Field(default=default("diagnosis_deadline_s"), gt=0,
                             description=described("diagnosis_deadline_s"))


# A Docker host's name, as durable_chaos/hosts.py checks it.
HOST_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"


class Experiment(_Strict):
    title: str = Field(default="", description="what the experiment shows, in a line")
    subject: str = Field(default="etcd", description="a subject's name, or a subject folder (relative to this file)")
    host: str | None = Field(default=None, pattern=HOST_PATTERN,
                             description="the Docker host the subject runs on, whose worker (`python worker.py "
                                         "--host NAME`) runs every step that touches it; default: this machine")
    vars: dict[str, str | int | float | bool] = Field(
        default={}, description="values `${name}` stands for in any string below; `--set name=value` overrides one")
    load: Load = Field(default_factory=Load, description="the client traffic the run sends and records")
    steps: list[Step] = Field(
        default_factory=lambda: [Step()], min_length=1,
        description="what the run does, in order: faults, waits, load changes, approvals, checks, parallel lanes, "
                    "random fault schedules")
    hypothesis: list[Probe] = Field(default=[], description="what clients may see: the load's figures per phase, "
                                                            "each with a tolerance; the run passes only if all held")
    stop: StopConditions = Field(default_factory=StopConditions, description=described("stop"))
    detectors: list[ExternalDetector] = Field(default=[], description=described("detectors"))
    timeouts: Timeouts = Field(default_factory=Timeouts, description="how long each stage may take")
    slow: SlowRule | None = Field(default=None, description="when a member that still answers counts as slow (a "
                                                           "violation): `factor` times its baseline, `floor_ms` "
                                                           "above it, for `checks` checks in a row; unset fields are "
                                                           "the subject's")
    notify: str | None = Field(default=None, description=described("notify_url"))


def schema() -> dict:
    """The published JSON Schema (`experiment.schema.json`, `starter.py run --schema`): editors validate and
    complete experiment files with it."""
    return {**Experiment.model_json_schema(), "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "durable-chaos experiment"}
