"""A campaign: one experiment over a matrix of subjects, faults and targets, one chaos run (a child workflow) per
cell; its progress, its report and the scorecard that compares it with the campaign's previous run.

Kept apart from the run's contracts (run.py, report.py): a campaign only carries run inputs and reads run results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from durable_chaos.contracts.run import ChaosInput
from durable_chaos.ids import run_workflow_id

CAMPAIGN_WORKFLOW_NAME = "ChaosCampaignWorkflow"
# One campaign of a name at a time, and its runs are found again by this id (the scorecard's previous run).
CAMPAIGN_ID_PREFIX = "campaign-"

CellState = Literal["pending", "running", "pass", "fail", "inconclusive", "cancelled", "error"]
DONE_STATES = ("pass", "fail", "inconclusive", "cancelled", "error")


def campaign_id(name: str) -> str:
    return CAMPAIGN_ID_PREFIX + name


class CampaignCell(BaseModel):
    """One cell of the matrix: the base experiment with its subject and first step's fault and target replaced."""

    key: str = Field(description='what the scorecard matches runs by, e.g. "nats · kill · leader"')
    subject: str
    project: str = Field(description="the subject copy's compose project: with the host, the cell's workflow id "
                                     "(per-subject lock)")
    fault: str = Field(description='the fault with its parameters, e.g. "loss percent=30"')
    target: str | None = None
    run_input: ChaosInput
    host: str | None = Field(default=None, description="the Docker host the cell runs on (None: campaigns from "
                                                       "before hosts)")

    @property
    def run_id(self) -> str:
        """The cell's workflow id: the subject copy on its host, as a manual run's."""
        return run_workflow_id(self.project, self.host)


class CampaignInput(BaseModel):
    name: str
    parallelism: int = Field(default=1, ge=1)
    cells: list[CampaignCell]


class CellResult(BaseModel):
    """A cell as the live view and the report show it."""

    key: str
    subject: str
    project: str
    fault: str
    target: str | None = None
    host: str | None = None
    state: CellState = "pending"
    workflow_id: str | None = None
    run_id: str | None = None
    targets: list[str] = Field(default=[], description="the members the run hit")
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    safety: str | None = Field(default=None, description="the data-safety verdict: ok, violated, unknown")
    diagnosis_correct: bool | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reasons: list[str] = []

    @classmethod
    def of(cls, cell: CampaignCell) -> "CellResult":
        """A cell not started yet."""
        return cls(key=cell.key, subject=cell.subject, project=cell.project, fault=cell.fault, target=cell.target,
                   host=cell.host)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class CellChange(BaseModel):
    """One way a cell did worse than in the previous run."""

    key: str
    kind: Literal["verdict", "time_to_detect", "time_to_restore", "safety"]
    before: str
    after: str
    detail: str


class Scorecard(BaseModel):
    """This run against the campaign's previous completed run (same name, same task queue)."""

    previous_run_id: str | None = Field(default=None, description="None: the first run of this campaign")
    previous_started_at: datetime | None = None
    unavailable: str | None = Field(default=None, description="why there is no comparison although there may be a "
                                                              "previous run (it could not be read)")
    regressions: list[CellChange] = []
    new_cells: list[str] = []
    removed_cells: list[str] = []

    def regressed(self, key: str) -> list[CellChange]:
        return [c for c in self.regressions if c.key == key]


class CampaignProgress(BaseModel):
    """What the campaign's `progress` query returns: every cell's state, for the live view."""

    campaign: str = ""
    parallelism: int = 1
    started_at: datetime | None = None
    cells: list[CellResult] = []


class CampaignReport(BaseModel):
    campaign: str
    workflow_id: str
    run_id: str
    task_queue: str
    parallelism: int
    started_at: datetime
    finished_at: datetime
    cells: list[CellResult]
    scorecard: Scorecard = Scorecard()

    @property
    def verdict(self) -> Literal["pass", "fail"]:
        return "pass" if self.cells and all(c.state == "pass" for c in self.cells) else "fail"


class PreviousCampaignRequest(BaseModel):
    name: str = Field(description="the campaign's name (its ChaosCampaign search attribute)")
    workflow_id: str
    run_id: str = Field(description="this run: never its own previous")
    task_queue: str
