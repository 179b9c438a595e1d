"""Campaign files as a user writes them, and the scorecard as pure functions: every cell is read as an experiment
file is (same model, same errors: one line naming the file, the line and the field, exit 2, nothing started); the
matrix is bounded; a second run is compared cell by cell. No server, no Docker."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from durable_chaos.campaign.load import is_campaign_file, load_campaign
from durable_chaos.campaign.model import schema
from durable_chaos.campaign.scorecard import compare, failing_first, notably_slower
from durable_chaos.contracts import ChaosReport
from durable_chaos.cli.app import app
from durable_chaos.cli.campaign_reports import to_html, to_junit
from durable_chaos.contracts.campaign import CampaignReport, CellResult
from durable_chaos.experiment.load import BadExperiment, load_experiment
from tests.conftest import run_command

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = sorted((ROOT / "examples").glob("campaign-*.yaml"))

BASE = """campaign: nightly
parallelism: 2
experiment:
  vars: {gap: 3}
  steps:
    - fault: loss
      params: {percent: 40}
      target: leader
      max_seconds: 30
  timeouts: {countdown: 0}
  hypothesis:
    - figure: longest_gap_s
      mode: during
      tolerance: {"<": "${gap}"}
matrix:
  subjects: [etcd, nats]
  faults: [kill, {fault: loss, params: {percent: 30}}]
  targets: [leader, follower]
"""


def write(tmp_path: Path, text: str, name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_there_is_an_example_campaign():
    assert CAMPAIGNS


@pytest.mark.parametrize("example", CAMPAIGNS, ids=lambda p: p.name)
def test_every_example_campaign_passes_a_dry_run_listing_its_cells(example, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["run", str(example.relative_to(ROOT)), "--dry-run"])
    assert result.exit_code == 0, result.output
    loaded = load_campaign(example)
    cells = [line for line in result.output.splitlines() if line.startswith("cell ")]
    assert len(cells) == len(loaded.input.cells) > 1
    assert all(", fault " in line and ", target " in line for line in cells)
    assert result.output.splitlines()[-1] == "dry run: nothing was started or touched"


def test_each_cell_is_the_base_experiment_with_subject_fault_and_target_replaced(tmp_path):
    loaded = load_campaign(write(tmp_path, BASE), {"gap": "5"})
    cells = loaded.input.cells
    assert [(c.subject, c.fault, c.target) for c in cells] == [
        (s, f, t) for s in ("etcd", "nats") for f in ("kill", "loss 30%") for t in ("leader", "follower")]
    assert len({c.key for c in cells}) == 8 and loaded.input.parallelism == 2
    assert {c.project for c in cells} == {"chaos-etcd", "chaos-nats"}
    # The same run input as the experiment file that says the same thing: one reader for both.
    same = write(tmp_path, """subject: nats
vars: {gap: 3}
steps:
  - fault: kill
    target: follower
    max_seconds: 30
timeouts: {countdown: 0}
hypothesis:
  - figure: longest_gap_s
    mode: during
    tolerance: {"<": "${gap}"}
""", "same.yaml")
    cell = next(c for c in cells if (c.subject, c.fault, c.target) == ("nats", "kill", "follower"))
    assert cell.run_input == load_experiment(same, {"gap": "5"}).run_input
    assert cell.run_input.hypothesis[0].tolerance.lt == 5  # --set reaches every cell


def test_a_base_experiment_in_a_file_of_its_own(tmp_path):
    write(tmp_path, "subject: etcd\nsteps:\n  - fault: pause\n    target: etcd2\n", "base.yaml")
    loaded = load_campaign(write(tmp_path, "campaign: c\nexperiment: base.yaml\nmatrix:\n  subjects: [etcd]\n"
                                           "  faults: [kill, stop]\n"))
    assert [(c.fault, c.target) for c in loaded.input.cells] == [("kill", "etcd2"), ("stop (grace 10s)", "etcd2")]
    write(tmp_path, "subject: etcd\nsteps:\n  - fault: pause\n    target: etcd9\n", "base.yaml")
    with pytest.raises(BadExperiment, match=r"base.yaml:4: steps\[0\].target: 'etcd9' is not a target of etcd"):
        load_campaign(tmp_path / "campaign.yaml")


@pytest.mark.parametrize("change, where", [
    (("parallelism: 2", "parallelism: 2\nschedule: daily"),
     "campaign.yaml:3: schedule: Extra inputs are not permitted"),
    (("parallelism: 2", "parallelism: 0"), "campaign.yaml:2: parallelism: Input should be greater than or equal to 1"),
    (("campaign: nightly", "campaign: 'night ly'"), "campaign.yaml:1: campaign: String should match pattern"),
    (("targets: [leader, follower]", "targets: [leader, etcd9]"),
     "campaign.yaml:18: steps[0].target: 'etcd9' is not a target of etcd"),
    (("percent: 30}}]", "percent: 300}}]"), "campaign.yaml:17: steps[0].params: fault loss: percent=300 is invalid"),
    (("faults: [kill,", "faults: [melt,"), "campaign.yaml:17: steps[0].fault: unknown fault 'melt'"),
    (("params: {percent: 30}", "params: {percent: 30}, colour: red"),
     "campaign.yaml:17: matrix.faults[1].colour: Extra inputs are not permitted"),
    (("countdown: 0}", "countdown: 0, detect: -1}"),
     "campaign.yaml:10: timeouts.detect: Input should be greater than 0"),
    (("subjects: [etcd, nats]", "subjects: [etcd, zookeeper]"), "campaign.yaml:16: subject: unknown subject"),
    (("subjects: [etcd, nats]", "subjects: [etcd, etcd]"), "campaign.yaml:15: matrix: cell 'etcd · kill · leader' is "
                                                           "in the matrix twice"),
    (("subjects: [etcd, nats]", "subjects: [etcd, {subject: nats, port: 1}]"),
     "campaign.yaml:16: matrix.subjects[1].port: Extra inputs are not permitted"),
    (("parallelism: 2", "parallelism: 2\nmax_cells: 7"),
     "campaign.yaml:16: matrix: 8 cells (2 subjects x 2 faults x 2 targets) is more than max_cells (7)"),
])
def test_a_mistake_is_one_line_naming_the_file_line_and_field(tmp_path, change, where):
    path = write(tmp_path, BASE.replace(*change))
    with pytest.raises(BadExperiment) as err:
        load_campaign(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}/{where}"), message


def test_the_default_matrix_bound_refuses_a_runaway_product(tmp_path):
    text = ("campaign: big\nmatrix:\n  subjects: [etcd, nats, postgres]\n  faults: [kill, stop, pause, partition, "
            "loss, bandwidth]\n  targets: [random, leader, follower]\n")
    with pytest.raises(BadExperiment, match=r"campaign.yaml:2: matrix: 54 cells .* more than max_cells \(50\)"):
        load_campaign(write(tmp_path, text))


def test_bad_input_exits_2_with_one_line_and_starts_nothing(tmp_path):
    path = write(tmp_path, BASE.replace("parallelism: 2", "parallelism: 2\nmax_cells: 4"))
    # No server is reachable at this address: exit 2 proves nothing was started before the file was refused.
    env = {"PATH": "/usr/bin:/bin", "TEMPORAL_ADDRESS": "127.0.0.1:1", "HOME": str(tmp_path)}
    proc = run_command([sys.executable, str(ROOT / "starter.py"), "run", str(path)], env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:16: matrix: 8 cells (2 subjects x 2 faults x 2 targets) is more than max_cells (4): shrink "
        "the matrix or raise max_cells"]


def test_an_experiment_file_is_not_taken_for_a_campaign(tmp_path):
    assert is_campaign_file(write(tmp_path, BASE))
    assert not is_campaign_file(write(tmp_path, "subject: etcd\n", "experiment.yaml"))
    assert not is_campaign_file(write(tmp_path, ": not yaml: [", "broken.yaml"))


def test_the_published_schema_is_the_models():
    published = json.loads((ROOT / "durable_chaos" / "campaign" / "campaign.schema.json").read_text())
    assert published == schema(), "run: python starter.py run --campaign-schema > " \
                                  "durable_chaos/campaign/campaign.schema.json"


# -- the scorecard -----------------------------------------------------------------------------------------------


def cell(key: str, state: str = "pass", ttd: float | None = 1.0, ttr: float | None = 2.0,
         safety: str | None = "ok", **more) -> CellResult:
    return CellResult(key=key, subject="etcd", project="chaos-etcd", fault="kill", state=state, time_to_detect_s=ttd,
                      time_to_restore_s=ttr, safety=safety, **more)


def test_notably_slower_needs_both_half_again_and_two_seconds():
    assert notably_slower(1.0, 3.5)  # +250 %, +2.5 s
    assert not notably_slower(0.2, 0.8)  # +300 %, but only 0.6 s: noise on a busy host
    assert not notably_slower(10.0, 13.0)  # +3 s, but only 30 %
    assert notably_slower(10.0, 15.5)


def test_the_scorecard_flags_each_cell_that_got_worse_and_only_those():
    before = [cell("a"), cell("b"), cell("c", ttd=1.0), cell("d", ttr=4.0), cell("e"), cell("gone")]
    after = [cell("a", state="fail", reasons=["hypothesis broken: gap"]), cell("b", ttd=1.4, ttr=2.9),
             cell("c", ttd=3.6), cell("d", ttr=None, state="fail"), cell("e", safety="violated"), cell("new")]
    card = compare(before, after, "run-1")
    got = {(c.key, c.kind): (c.before, c.after) for c in card.regressions}
    assert got == {
        ("a", "verdict"): ("pass", "fail"),
        ("c", "time_to_detect"): ("1.000 s", "3.600 s"),
        ("d", "verdict"): ("pass", "fail"),
        ("d", "time_to_restore"): ("4.000 s", "never"),
        ("e", "safety"): ("ok", "violated"),
    }
    assert card.regressions[0].detail == "pass -> fail: hypothesis broken: gap"
    assert (card.new_cells, card.removed_cells, card.previous_run_id) == (["new"], ["gone"], "run-1")


def test_getting_better_is_no_regression_and_a_first_run_has_nothing_to_compare():
    before = [cell("a", state="fail", ttd=5.0, safety="violated")]
    assert compare(before, [cell("a", ttd=0.5)]).regressions == []
    assert compare(None, [cell("a")]).previous_run_id is None


# -- the report files --------------------------------------------------------------------------------------------


def _report() -> CampaignReport:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cells = [cell("etcd · kill · leader", workflow_id="chaos-etcd", run_id="r1", started_at=now,
                  finished_at=now + timedelta(seconds=20)),
             cell("etcd · kill · follower", state="fail", reasons=["hypothesis broken: no long silence"],
                  workflow_id="chaos-etcd", run_id="r2", started_at=now, finished_at=now + timedelta(seconds=9)),
             cell("nats · kill · leader", state="error", reasons=["subject copy chaos-nats is busy"])]
    previous = [cell("etcd · kill · leader"), cell("etcd · kill · follower")]
    return CampaignReport(campaign="nightly", workflow_id="campaign-nightly", run_id="R", task_queue="q",
                          parallelism=2, started_at=now, finished_at=now + timedelta(seconds=30), cells=cells,
                          scorecard=compare(previous, cells, "R0"))


def test_the_html_report_links_every_run_and_marks_the_regressions():
    page = to_html(_report(), lambda wid, rid: f"http://ui/{wid}/{rid}")
    assert '<a href="http://ui/chaos-etcd/r1">etcd · kill · leader</a>' in page
    assert '<a href="http://ui/chaos-etcd/r2">' in page
    assert page.count('<tr class="regressed">') == 1
    assert "regressed: pass -&gt; fail: hypothesis broken: no long silence" in page
    assert "new cell: nats · kill · leader" in page
    assert "<script" not in page and "http" not in page.replace("http://ui/", "")  # self-contained


def test_the_junit_report_has_one_testcase_per_cell_and_fails_the_failed_one():
    suite = ET.fromstring(to_junit(_report()).split("\n", 1)[1]).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["etcd · kill · leader"].find("failure") is None
    failure = cases["etcd · kill · follower"].find("failure")
    assert failure.get("message") == "hypothesis broken: no long silence"
    assert "regressed: pass -> fail" in cases["etcd · kill · follower"].find("system-out").text
    assert cases["nats · kill · leader"].find("error").get("type") == "CellError"


def test_a_cells_first_reason_is_the_one_that_failed_it():
    broken = "hypothesis broken: gap: 2.1 s >= 0.001"
    reasons = ["detected after 0.5s: acknowledged publish failed: no answer", "nats1 restored", broken,
               "data safety ok: 0 lost"]
    report = ChaosReport.model_construct(reasons=reasons, failed_because=[broken])
    assert failing_first(report)[0] == broken
    assert sorted(failing_first(report)) == sorted(reasons)
