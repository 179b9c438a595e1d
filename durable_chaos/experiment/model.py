"""An experiment file, as a model: what a user writes in their repository and reviews like code.

Every field has a default, so a file with only `subject: nats` is an experiment (a random member of NATS killed,
the subject's own timeouts). The defaults are the run input's (`ChaosInput`): `chaos`'s flags and these fields read
them from the same place, so a default lives once. The JSON Schema published beside this module
(`experiment.schema.json`) is generated from these models; a test keeps it current.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from durable_chaos.contracts import MAX_LOAD_RATE, ChaosInput, ExternalDetector, Probe, StopConditions


def default(field: str) -> Any:
    """The run input's default for `field`: the one place it is written."""
    return ChaosInput.model_fields[field].get_default(call_default_factory=True)


def described(field: str) -> str | None:
    return ChaosInput.model_fields[field].description


class _Strict(BaseModel):
    # An unknown field is a typo until proven otherwise: refused, with its line.
    model_config = ConfigDict(extra="forbid")


class FaultStep(_Strict):
    """Inject one fault, hold it until it is detected (or `max_seconds`), undo it, and check that all is well."""

    fault: str = Field(default=default("fault"), description="the fault kind: kill, stop, pause, partition, loss, "
                                                             "bandwidth, latency (`starter.py chaos --help`)")
    params: dict[str, Any] = Field(default={}, description="the kind's parameters, e.g. {percent: 30}")
    target: str | None = Field(default=default("target"), description=described("target"))
    count: int = Field(default=default("count"), ge=1, description=described("count"))
    allow_quorum_loss: bool = Field(default=default("allow_quorum_loss"), description=described("allow_quorum_loss"))
    max_seconds: float = Field(default=default("max_fault_s"), gt=0,
                               description="the fault is undone at the latest this long after it went in")


class Load(_Strict):
    rate: float = Field(default=default("load_rate"), gt=0, le=MAX_LOAD_RATE,
                        description=described("load_rate"))


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


class Experiment(_Strict):
    title: str = Field(default="", description="what the experiment shows, in a line")
    subject: str = Field(default="etcd", description="a subject's name, or a subject folder (relative to this file)")
    vars: dict[str, str | int | float | bool] = Field(
        default={}, description="values `${name}` stands for in any string below; `--set name=value` overrides one")
    load: Load = Field(default_factory=Load, description="the client traffic the run sends and records")
    steps: list[FaultStep] = Field(
        default_factory=lambda: [FaultStep()], min_length=1, max_length=1,
        description="what the run does, in order (one fault step in this release)")
    hypothesis: list[Probe] = Field(default=[], description="what clients may see: the load's figures per phase, "
                                                            "each with a tolerance; the run passes only if all held")
    stop: StopConditions = Field(default_factory=StopConditions, description=described("stop"))
    detectors: list[ExternalDetector] = Field(default=[], description=described("detectors"))
    timeouts: Timeouts = Field(default_factory=Timeouts, description="how long each stage may take")
    notify: str | None = Field(default=None, description=described("notify_url"))


def schema() -> dict:
    """The published JSON Schema (`experiment.schema.json`, `starter.py run --schema`): editors validate and
    complete experiment files with it."""
    return {**Experiment.model_json_schema(), "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "durable-chaos experiment"}
