"""A campaign file, as a model: one experiment run over a matrix of subjects, faults and targets.

```yaml
campaign: nightly-etcd           # its name: the scorecard compares the runs of one name
parallelism: 2                   # cells at once at most (cells on one subject copy never overlap)
experiment: {...}                # the base experiment (every field of an experiment file), or a file's path
matrix:
  subjects: [etcd, nats]
  faults: [kill, {fault: loss, params: {percent: 30}}]
  targets: [leader, follower]
  hosts: [staging-a, staging-b]  # optional: every cell on each Docker host (a worker per host)
```

Each cell is the base experiment with its subject and its first step's fault, parameters and target replaced; the
cell is then read exactly as an experiment file is (durable_chaos/experiment/load.py). The JSON Schema published
beside this module (`campaign.schema.json`) is generated from these models; a test keeps it current.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from durable_chaos.experiment.model import HOST_PATTERN, Experiment

# A matrix grows as a product: a typo in a list (or a list pasted twice) can ask for hundreds of runs, each of which
# breaks a real cluster. Larger campaigns say so with `max_cells`.
DEFAULT_MAX_CELLS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectCopy(_Strict):
    """A subject copy of its own: several copies of one subject can run cells side by side."""

    subject: str = Field(description="a subject's name, or a subject folder (relative to the campaign file)")
    project: str | None = Field(default=None, description="its compose project (default: the subject's)")
    port_base: int | None = Field(default=None, ge=1, le=65535, description="its first host port")
    host: str | None = Field(default=None, pattern=HOST_PATTERN,
                             description="the Docker host it runs on (default: matrix.hosts, else the experiment's)")


class MatrixFault(_Strict):
    fault: str = Field(description="the fault kind (`starter.py chaos --help` lists them)")
    params: dict[str, Any] = Field(default={}, description="the kind's parameters, e.g. {percent: 30}")


class Matrix(_Strict):
    subjects: list[str | SubjectCopy] = Field(min_length=1, description="subjects (names, folders) or copies")
    faults: list[str | MatrixFault] | None = Field(
        default=None, min_length=1, description="replace the first step's fault; unset: the experiment's")
    targets: list[str] | None = Field(
        default=None, min_length=1, description="replace the first step's target (a member, random, leader, "
                                                "follower); unset: the experiment's")
    hosts: list[Annotated[str, Field(pattern=HOST_PATTERN)]] | None = Field(
        default=None, min_length=1, description="run every cell on each of these Docker hosts (a worker per host: "
                                                "`python worker.py --host NAME`); unset: the experiment's host")


class Campaign(_Strict):
    campaign: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$",
                          description="the campaign's name (its workflow id is campaign-NAME); the scorecard "
                                      "compares runs of the same name")
    title: str = Field(default="", description="what the campaign shows, in a line")
    parallelism: int = Field(default=1, ge=1, description="cells run at once at most (1: one after the other); "
                                                          "cells on the same subject copy never overlap")
    max_cells: int = Field(default=DEFAULT_MAX_CELLS, ge=1, description="refuse a matrix with more cells")
    experiment: Experiment | str = Field(default_factory=Experiment,
                                         description="the base experiment, inline or an experiment file's path "
                                                     "(relative to the campaign file)")
    matrix: Matrix


def schema() -> dict:
    """The published JSON Schema (`campaign.schema.json`, `starter.py run --schema`'s campaign twin)."""
    return {**Campaign.model_json_schema(), "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "durable-chaos campaign"}
