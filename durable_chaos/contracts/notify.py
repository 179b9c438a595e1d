"""The notice a run posts to webhooks when it ends."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from durable_chaos.contracts.names import FaultKind, Verdict
from durable_chaos.contracts.safety import SafetyVerdict


class RunNotice(BaseModel):
    """What a run POSTs when it ends: the report's headline, small (no load windows, no operation history).
    `text` is the one or two lines a chat shows: Slack's incoming webhooks (and Mattermost's, Rocket.Chat's) read it."""

    text: str
    workflow_id: str
    run_id: str
    subject: str
    project: str
    fault: FaultKind
    fault_label: str | None = None
    targets: list[str] = []
    verdict: Verdict
    time_to_detect_s: float | None = None
    time_to_restore_s: float | None = None
    safety: SafetyVerdict | None = Field(default=None, description="None: no safety check ran")
    diagnosis_correct: bool | None = None
    reasons: list[str] = []
    started_at: datetime
    finished_at: datetime


class NotifyRequest(BaseModel):
    notice: RunNotice
    urls: list[str] = Field(default=[], description="the run's own webhooks (--notify)")
    worker_url: bool = Field(default=False, description="also the CHAOS_NOTIFY_URL of the worker that posts")


class NotifyPost(BaseModel):
    notice: RunNotice
    url: str | None = Field(description="None: the posting worker's CHAOS_NOTIFY_URL, read there and only there")
