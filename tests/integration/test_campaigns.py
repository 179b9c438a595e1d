"""Campaigns as a user runs them: `starter.py run CAMPAIGN.yaml` against two real NATS copies (the cheapest subject
to restart), the report of its four cells, the scorecard of a second run, and a cancelled campaign that leaves no
fault behind."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from durable_chaos.contracts import Attr, Progress
from durable_chaos.contracts.campaign import CampaignProgress, campaign_id
from durable_chaos.hosts import default_host
from durable_chaos.ids import run_workflow_id
from tests.conftest import ARTIFACTS, command_env, private_copy, running_worker, starter, until
from tests.fake_monitoring import FakeMonitoring
from workflows.campaign import ChaosCampaignWorkflow

PORT_RANGE = (39000, 39990)


@pytest_asyncio.fixture(scope="module")
async def copies():
    """Two private NATS copies: cells on different copies may run side by side."""
    async with private_copy("nats", PORT_RANGE) as a, private_copy("nats", PORT_RANGE) as b:
        yield a, b


@pytest.fixture
def cli_env(client, tmp_path) -> dict[str, str]:
    # A task queue no worker polls: the starter runs the campaign's worker itself, as for a user's first run.
    return command_env(client.service_client.config.target_host, tmp_path,
                       CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")


def campaign_file(tmp_path: Path, copies, name: str, faults: str, extra: str = "", parallelism: int = 2) -> Path:
    subjects = ", ".join(f"{{subject: nats, project: {c.instance.project}, port_base: {c.instance.port_base}}}"
                         for c in copies)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""campaign: {name}
parallelism: {parallelism}
experiment:
  vars: {{max_gap: 60}}
  load: {{rate: 20}}
  steps:
    - fault: kill
      target: follower
  timeouts: {{countdown: 0, detect: 10, diagnosis: 5}}
  hypothesis:
    - name: no long silence
      figure: longest_gap_s
      mode: during
      tolerance: {{"<": "${{max_gap}}"}}
{extra}matrix:
  subjects: [{subjects}]
  faults: [{faults}]
""")
    return path


async def all_up(copies) -> bool:
    return all([all((await c.running()).values()) for c in copies])


async def test_a_2x2_campaign_reports_four_cells_and_its_second_run_flags_the_regressions(cli_env, copies,
                                                                                          tmp_path):
    path = campaign_file(tmp_path, copies, f"t-{uuid.uuid4().hex[:6]}", "kill, pause")
    began = time.monotonic()
    proc = await asyncio.to_thread(starter, "run", str(path), "--json", env=cli_env, timeout=420)
    wall = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    cells = report["cells"]
    assert len(cells) == 4 and {c["state"] for c in cells} == {"pass"}, [(c["key"], c["reasons"]) for c in cells]
    assert {(c["project"], c["fault"]) for c in cells} == {(c.instance.project, f) for c in copies
                                                          for f in ("kill", "pause")}
    for c in cells:
        assert c["time_to_detect_s"] > 0 and c["time_to_restore_s"] > 0 and c["safety"] == "ok"
        assert c["workflow_id"] == run_workflow_id(c["project"], default_host()) and c["run_id"]
    assert report["scorecard"]["previous_run_id"] is None  # the first run: nothing to compare
    # Two copies, two at once: the cells of one copy never overlap, those of different copies do.
    spans = sorted((c["started_at"], c["finished_at"], c["project"]) for c in cells)
    for (s1, e1, p1), (s2, e2, p2) in zip(spans, spans[1:]):
        if p1 == p2:
            assert e1 <= s2
    cell_seconds = sum(_seconds(c) for c in cells)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "campaign-timing.txt").write_text(f"2x2 campaign (2 NATS copies x kill, pause; parallelism 2): "
                                                   f"wall {wall:.1f} s (CLI incl. start-up), cells' durations sum "
                                                   f"{cell_seconds:.1f} s, campaign "
                                                   f"{_span(report):.1f} s\n")
    assert _span(report) < cell_seconds  # they did run side by side
    assert (await all_up(copies))

    # The same campaign again, with the tolerance tightened through its variable: every cell now fails, and the
    # scorecard says each one regressed from pass to fail, against the first run.
    proc = await asyncio.to_thread(starter, "run", str(path), "--set", "max_gap=0.001", "--json", env=cli_env,
                                   timeout=420)
    assert proc.returncode == 1, proc.stderr
    second = json.loads(proc.stdout)
    card = second["scorecard"]
    assert card["previous_run_id"] == report["run_id"]
    verdicts = {c["key"]: (c["before"], c["after"]) for c in card["regressions"] if c["kind"] == "verdict"}
    assert verdicts == {c["key"]: ("pass", "fail") for c in cells}
    assert all(c["detail"].startswith("pass -> fail: hypothesis broken: no long silence")
               for c in card["regressions"] if c["kind"] == "verdict")
    assert card["new_cells"] == [] and card["removed_cells"] == []

    # The reports a user asks for: HTML with each cell linked to its run and the regressions marked, JUnit with one
    # testcase per cell.
    cid = campaign_id(report["campaign"])
    out = tmp_path / "campaign.html"
    proc = await asyncio.to_thread(starter, "report", cid, "--format", "html", "-o", str(out), env=cli_env)
    assert proc.returncode == 1, proc.stderr
    page = out.read_text()
    assert page.count('class="regressed"') == 4
    for c in second["cells"]:
        assert f'/workflows/{c["workflow_id"]}/{c["run_id"]}/history' in page
    (ARTIFACTS / "campaign-report.html").write_text(page)
    proc = await asyncio.to_thread(starter, "report", cid, "--format", "junit", env=cli_env)
    suite = ET.fromstring(proc.stdout.split("\n", 1)[1]).find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 4 and all(case.find("failure") is not None for case in cases)
    assert "hypothesis broken" in cases[0].find("failure").get("message")
    assert (await all_up(copies))


def _seconds(cell: dict) -> float:
    from datetime import datetime
    return (datetime.fromisoformat(cell["finished_at"]) - datetime.fromisoformat(cell["started_at"])).total_seconds()


def _span(report: dict) -> float:
    from datetime import datetime
    return (datetime.fromisoformat(report["finished_at"])
            - datetime.fromisoformat(report["started_at"])).total_seconds()


async def test_cancelling_a_campaign_cancels_its_running_cells_and_every_fault_is_undone(client, cli_env, copies,
                                                                                          tmp_path):
    # The user's monitoring never fires, so each fault is held for the whole detect timeout: time to cancel.
    with FakeMonitoring() as monitoring:
        extra = f"  detectors: [{{kind: http, url: '{monitoring.url}/health'}}]\n"
        path = campaign_file(tmp_path, copies, f"t-{uuid.uuid4().hex[:6]}", "pause, kill", extra=extra)
        queue = cli_env["CHAOS_TASK_QUEUE"]
        async with running_worker(client, queue):
            proc = await asyncio.to_thread(starter, "run", str(path), "--detach", "--json", env=cli_env)
            assert proc.returncode == 0, proc.stderr
            started = json.loads(proc.stdout)
            handle = client.get_workflow_handle(started["workflow_id"], run_id=started["run_id"])

            async def both_injected():
                p = await handle.query(ChaosCampaignWorkflow.progress, result_type=CampaignProgress)
                running = [c for c in p.cells if c.state == "running" and c.run_id]
                if len(running) < 2:
                    return None
                states = [(await client.get_workflow_handle(c.workflow_id, run_id=c.run_id).query(
                    "progress", result_type=Progress)).fault_state.value for c in running]
                return running if states == ["injected", "injected"] else None

            running, _ = await until(60, both_injected)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
            for cell in running:
                desc = await client.get_workflow_handle(cell.workflow_id, run_id=cell.run_id).describe()
                assert desc.status == WorkflowExecutionStatus.CANCELED
                assert desc.typed_search_attributes.get(Attr.FAULT_STATE) == "restored"
            final = await handle.query(ChaosCampaignWorkflow.progress, result_type=CampaignProgress)
            assert [c.state for c in final.cells] == ["cancelled"] * 4
    # Containers up and none left frozen by the pause.
    assert (await all_up(copies))
    for c in copies:
        assert not any(ct.state.paused for ct in c.docker.compose.ps())
        assert (await c.wait_healthy(30)).ok
