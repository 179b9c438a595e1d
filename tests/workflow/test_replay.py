"""Determinism: histories recorded from real runs replay on today's workflow code.

A change that would make a running workflow take a different path on replay (after a worker crash) fails here.
The histories of the current release (workflows/compat.py's RELEASE) and of the previous one are kept, one folder
each, and nothing older (the patch policy, docs/patches.md). Record the current release's with
`python -m tests.histories.record` only after an intended change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from durable_chaos.runtime.worker import RUNNER, WORKFLOWS
from workflows.compat import PREVIOUS_RELEASE, RELEASE

HERE = Path(__file__).resolve().parents[1] / "histories"
HISTORIES = sorted(HERE.rglob("*.json"))
SCENARIOS = {"pass", "abort_at_detect", "deadline_at_detect", "cancel_at_detect", "terminate_at_detect",
             "guard_after_terminate", "scheduled", "partition_leader", "loss_two_members", "stopped_error_rate",
             "their_alert", "notify"}
# Recorded from this release on: kept in every release folder from v8.
SINCE_V8 = {"steps", "no_effect"}


def _name(path: Path) -> str:
    return str(path.relative_to(HERE).with_suffix(""))


def test_the_supported_releases_and_only_those_have_histories():
    kept = {p.parent.name for p in HISTORIES}
    assert kept == {RELEASE, PREVIOUS_RELEASE}, f"kept {sorted(kept)}: retire the others (docs/patches.md)"
    for release in kept:
        wanted = SCENARIOS | (SINCE_V8 if int(release.lstrip("v")) >= 8 else set())
        assert {p.stem for p in HISTORIES if p.parent.name == release} >= wanted, release


@pytest.mark.parametrize("path", HISTORIES, ids=_name)
async def test_recorded_history_replays(path):
    # The id the recorder ran it under (`record-NAME`): a chaos run names its fault guard after its own id.
    history = WorkflowHistory.from_json(f"record-{path.stem}", path.read_text())
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                   workflow_runner=RUNNER).replay_workflow(history)  # as the worker runs workflow code
