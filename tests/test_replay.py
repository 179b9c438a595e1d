"""Determinism: histories recorded from real runs (tests/histories/*.json) replay on today's workflow code.

A change that would make a running workflow take a different path on replay (after a worker crash) fails here.
Re-record with `python -m tests.histories.record` only after an intended change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from durable_chaos.runtime.worker import WORKFLOWS

HERE = Path(__file__).parent / "histories"
# Today's recordings at the top, earlier releases' in vN/ folders: both must replay.
HISTORIES = sorted(HERE.rglob("*.json"))


def _name(path: Path) -> str:
    return str(path.relative_to(HERE).with_suffix(""))


def test_recorded_histories_exist():
    assert {_name(p) for p in HISTORIES} >= {
        "pass", "abort_at_detect", "deadline_at_detect", "cancel_at_detect", "terminate_at_detect",
        "guard_after_terminate", "scheduled", "partition_leader", "loss_two_members", "stopped_error_rate",
        "their_alert", "notify", "v1/pass", "v2/pass", "v3/pass", "v4/pass", "v5/pass"}


@pytest.mark.parametrize("path", HISTORIES, ids=_name)
async def test_recorded_history_replays(path):
    # The id the recorder ran it under (`record-NAME`): a chaos run names its fault guard after its own id.
    history = WorkflowHistory.from_json(f"record-{path.stem}", path.read_text())
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)
