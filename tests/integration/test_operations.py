"""After a real run: find it the way users do (the `temporal` CLI, `starter.py list`, the web UI in a real browser)
and read its reports (JSON, Markdown, HTML with the timeline plot, JUnit XML).

One real chaos run on a real etcd copy, started with `starter.py chaos` against a dev server that serves the web UI.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from durable_chaos.cli.render import load_strip
from durable_chaos.contracts import Attr, FaultState, GuardReport, Progress
from durable_chaos.hosts import default_host
from durable_chaos.ids import fault_guard_id
from durable_chaos.runtime.devserver import temporal_binary
from tests.conftest import ARTIFACTS, command_env, run_command, running_worker, starter, subject_args
from tests.workflow.test_workflow_logic import FakeCluster, fast_input, run_chaos
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (26000, 26490)
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to call home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def address(temporal_ui_env) -> str:
    return temporal_ui_env.client.service_client.config.target_host


@pytest.fixture(scope="module")
def cli_env(temporal_ui_env, address, tmp_path_factory) -> dict[str, str]:
    return command_env(address, tmp_path_factory.mktemp("state"), TEMPORAL_UI_PORT=str(temporal_ui_env.ui_port),
                       CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:8]}",
                COLUMNS="200")


@pytest_asyncio.fixture(scope="module")
async def chaos_command(cli_env, etcd) -> subprocess.CompletedProcess:
    """One real run that kills etcd1, through the CLI (which runs its own worker)."""
    since = datetime.now(timezone.utc)
    proc = await asyncio.to_thread(starter, "chaos", "--json", "--countdown", "1", "--target", "etcd1",
                                   *subject_args(etcd), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert (await etcd.died_since(since)) == ["etcd1"]
    return proc


@pytest.fixture(scope="module")
def finished_run(chaos_command) -> dict:
    """That run's JSON report."""
    return json.loads(chaos_command.stdout)


@pytest_asyncio.fixture(scope="module")
async def failed_run(temporal_ui_env) -> str:
    """A run whose detection stage breaks (test activities): verdict fail. Returns its workflow id."""
    cluster = FakeCluster()
    cluster.detect_error = True
    report, _ = await run_chaos(temporal_ui_env.client, cluster, fast_input(target="n2"))
    assert report.verdict == "fail"
    return report.workflow_id


async def _wait_listed(cmd: list[str], env: dict[str, str], workflow_id: str) -> list[dict]:
    """Visibility is eventually consistent: retry the listing for a few seconds."""
    for _ in range(40):
        proc = await asyncio.to_thread(run_command, cmd, env)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout or "[]")
        if any(r.get("workflowId", r.get("workflow_id")) == workflow_id
               or r.get("execution", {}).get("workflowId") == workflow_id for r in rows):
            return rows
        await asyncio.sleep(0.5)
    raise AssertionError(f"{workflow_id} never listed by {cmd}")


# -- the real `temporal` CLI finds the run by its search attributes ------------------------------------------------


async def test_temporal_cli_finds_the_run_by_subject_and_verdict(finished_run, address, cli_env):
    wid = finished_run["workflow_id"]
    query = 'ChaosSubject="etcd" AND ChaosVerdict="pass"'
    await _wait_listed([temporal_binary(), "workflow", "list", "--address", address, "--query", query,
                        "--output", "json"], cli_env, wid)
    # ...and not by the opposite verdict.
    proc = await asyncio.to_thread(run_command, [temporal_binary(), "workflow", "list", "--address", address, "--query",
                                         'ChaosSubject="etcd" AND ChaosVerdict="fail"', "--output", "json"], cli_env)
    assert wid not in proc.stdout

    proc = await asyncio.to_thread(run_command, [temporal_binary(), "workflow", "describe", "--address", address,
                                         "--workflow-id", wid, "--output", "json"], cli_env)
    assert proc.returncode == 0, proc.stderr
    indexed = json.loads(proc.stdout)["workflowExecutionInfo"]["searchAttributes"]["indexedFields"]
    decoded = {name: json.loads(base64.b64decode(p["data"])) for name, p in indexed.items()}
    assert decoded["ChaosSubject"] == "etcd"
    assert decoded["ChaosFault"] == "kill"
    assert decoded["ChaosTarget"] == "etcd1" == finished_run["target"]
    assert decoded["ChaosStage"] == "done"
    assert decoded["ChaosFaultState"] == "restored"
    assert decoded["ChaosVerdict"] == "pass"
    assert decoded["ChaosDetectSeconds"] == pytest.approx(finished_run["time_to_detect_s"])
    assert decoded["ChaosRestoreSeconds"] == pytest.approx(finished_run["time_to_restore_s"])
    assert decoded["ChaosDiagnosisCorrect"] is finished_run["diagnosis"]["correct"] is True


async def test_history_reads_like_a_story(finished_run, temporal_ui_env):
    """Every activity carries a summary: the kill, the restore, the load windows are named in the history."""
    handle = temporal_ui_env.client.get_workflow_handle(finished_run["workflow_id"], run_id=finished_run["run_id"])
    desc = await handle.describe()
    assert await desc.static_summary() == "kill etcd1 on etcd (project " + finished_run["project"] + ")"
    summaries = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes") and event.user_metadata.HasField("summary"):
            summaries.append(json.loads(event.user_metadata.summary.data))
    assert summaries[0] == "preflight etcd"
    assert "kill etcd1" in summaries and "restore etcd1" in summaries and "verify healthy" in summaries
    assert any(s.startswith("load window ") for s in summaries)


# -- the web UI in a real browser -----------------------------------------------------------------------------------


@pytest.fixture
def isolated_chromium(tmp_path) -> str:
    """Debian's Chromium in a network namespace of its own, holding only a loopback that is down.

    Docker adding and removing interfaces on this machine (other tests, other projects) makes Chromium abort page
    loads with ERR_NETWORK_CHANGED; in its own namespace it sees no such change. Its requests are relayed by
    Playwright (`_relay`), which also makes sure nothing but 127.0.0.1 is ever contacted.
    """
    wrapper = tmp_path / "chromium-isolated"
    wrapper.write_text(f'#!/bin/sh\nexec unshare --net -- {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


async def _relay(route) -> None:
    if urlsplit(route.request.url).scheme == "file":  # a report page opened from disk
        await route.continue_()
        return
    # The web UI also asks newsfeed.temporal.io for news: only the local server is reachable here.
    if urlsplit(route.request.url).hostname != "127.0.0.1":
        await route.abort()
        return
    await route.fulfill(response=await route.fetch())


@asynccontextmanager
async def browser_page(chromium: str, shot: Path):
    """A page in headless Chromium whose requests go through `_relay`; its screenshot is kept, pass or fail."""
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.route("**/*", _relay)
        try:
            yield page
        finally:  # the screenshot is the artifact a human checks
            await page.screenshot(path=str(shot), full_page=True)
            await page.unroute_all(behavior="ignoreErrors")
            await browser.close()
    print(f"screenshot: {shot}")


def run_page(temporal_ui_env, run: dict) -> str:
    return (f"http://127.0.0.1:{temporal_ui_env.ui_port}/namespaces/default/workflows/{run['workflow_id']}/"
            f"{run['run_id']}/history")


async def test_web_ui_shows_summary_and_current_details(finished_run, temporal_ui_env, cli_env, isolated_chromium):
    shot = ARTIFACTS / f"ui-{finished_run['workflow_id']}.png"
    # The UI reads current details with a query, which a worker answers (as `python worker.py` would).
    async with running_worker(temporal_ui_env.client, cli_env["CHAOS_TASK_QUEUE"]), \
            browser_page(isolated_chromium, shot) as page:
        await page.goto(run_page(temporal_ui_env, finished_run))
        # The "User Metadata" tab renders the static summary and the current details (markdown) in frames.
        await page.get_by_text("User Metadata", exact=True).first.click(timeout=30_000)
        summary = page.frame_locator("#user-metadata-summary")
        await summary.get_by_text("kill etcd1 on etcd").wait_for(timeout=15_000)
        details = page.frame_locator("#user-metadata-current-details")
        for text in ("Stage: done - verdict: pass", "Target: etcd1", "Fault state: restored",
                     f"Time to restore: {finished_run['time_to_restore_s']:.3f} s"):
            await details.get_by_text(text).wait_for(timeout=15_000)


async def test_starter_links_the_run_and_the_list_of_chaos_runs(chaos_command, finished_run, temporal_ui_env,
                                                                isolated_chromium):
    workflows = f"http://127.0.0.1:{temporal_ui_env.ui_port}/namespaces/default/workflows"
    # Form-encoded (WorkflowType="ChaosDemoWorkflow"), as the web UI itself writes a query into its address bar.
    chaos_runs = f"{workflows}?query=WorkflowType%3D%22ChaosDemoWorkflow%22"
    assert run_page(temporal_ui_env, finished_run) in chaos_command.stderr
    assert chaos_runs in chaos_command.stderr
    guard = fault_guard_id(finished_run["workflow_id"], finished_run["run_id"])
    async with browser_page(isolated_chromium, ARTIFACTS / "ui-chaos-runs.png") as page:
        await page.goto(chaos_runs)
        await page.get_by_text('WorkflowType = "ChaosDemoWorkflow"').first.wait_for(timeout=30_000)
        await page.get_by_text(finished_run["run_id"]).first.wait_for(timeout=15_000)
        # Only chaos runs: the run's fault guard (a workflow of its own) is filtered out.
        assert await page.get_by_text(guard).count() == 0
    # The guard closed with its run, on the starter's own worker: nothing is left running in the list.
    guard_handle = temporal_ui_env.client.get_workflow_handle(guard, result_type=GuardReport)
    guard_run = await asyncio.wait_for(guard_handle.result(), 10)
    assert (guard_run.run_status, guard_run.fault_state, guard_run.action) == ("COMPLETED", FaultState.RESTORED, None)


async def test_the_list_of_chaos_runs_shows_a_failed_verdict_as_failed(finished_run, failed_run, temporal_ui_env,
                                                                       isolated_chromium):
    """Without opening a run: its verdict fail ended it Failed, a pass Completed."""
    workflows = f"http://127.0.0.1:{temporal_ui_env.ui_port}/namespaces/default/workflows"
    async with browser_page(isolated_chromium, ARTIFACTS / "ui-failed-verdict.png") as page:
        await page.goto(f"{workflows}?query=WorkflowType%3D%22ChaosDemoWorkflow%22")
        failed = page.locator("tr", has_text=failed_run)
        await failed.first.wait_for(timeout=30_000)
        assert "failed" in (await failed.first.inner_text()).lower()
        passed = page.locator("tr", has_text=finished_run["run_id"])
        await passed.first.wait_for(timeout=15_000)
        assert "completed" in (await passed.first.inner_text()).lower()


async def test_a_closed_run_shows_its_facts_with_no_worker_running(finished_run, temporal_ui_env, isolated_chromium):
    """No worker runs here (the starter's ended with the run): current details and queries go unanswered, the memo
    carries what a person looks for."""
    handle = temporal_ui_env.client.get_workflow_handle(finished_run["workflow_id"], run_id=finished_run["run_id"])
    facts = {"subject": "etcd", "fault": "kill", "fault_label": "kill", "target": "etcd1", "targets": ["etcd1"],
             "fault_state": "restored", "stage": "done",
             "verdict": "pass", "time_to_detect_s": finished_run["time_to_detect_s"],
             "time_to_restore_s": finished_run["time_to_restore_s"], "diagnosis_correct": True,
             "host": default_host()}  # started with `chaos`: on this machine's Docker host
    assert await (await handle.describe()).memo() == facts
    async with browser_page(isolated_chromium, ARTIFACTS / f"ui-memo-{finished_run['workflow_id']}.png") as page:
        await page.goto(run_page(temporal_ui_env, finished_run))
        await page.get_by_text("Memo", exact=True).first.click(timeout=30_000)
        for key in ("target", "fault_state", "verdict", "time_to_detect_s"):
            await page.get_by_text(f'"{key}": {json.dumps(facts[key])}').first.wait_for(timeout=15_000)


async def test_live_view_strip_is_red_during_the_fault_and_green_after_restore(finished_run, temporal_ui_env,
                                                                               cli_env):
    """The `progress` query carries the recent real load windows; the live view colours each by fault phase."""
    async with running_worker(temporal_ui_env.client, cli_env["CHAOS_TASK_QUEUE"]):
        handle = temporal_ui_env.client.get_workflow_handle(finished_run["workflow_id"])
        progress = await handle.query(ChaosDemoWorkflow.progress, result_type=Progress)
    windows = progress.recent_windows
    assert [w.model_dump(mode="json") for w in windows] == finished_run["load"]["windows"][-len(windows):]
    strip = load_strip(progress)
    colours = [span.style for span in strip.spans][:len(windows)]
    kill, back = progress.injected_at, progress.restore_started_at
    assert kill is not None and back is not None
    expected = ["bold red" if w.end > kill and w.start < back else "green" for w in windows]
    assert colours == expected
    assert expected[0] == "green" and "bold red" in expected  # a healthy baseline, then the fault


# -- starter.py list / status / report -------------------------------------------------------------------------------


async def test_starter_list_shows_the_run_with_its_numbers(finished_run, cli_env):
    rows = await _wait_listed([sys.executable, "starter.py", "list", "--subject", "etcd", "--verdict", "pass",
                               "--json"], cli_env, finished_run["workflow_id"])
    row = next(r for r in rows if r["run_id"] == finished_run["run_id"])
    assert row["target"] == "etcd1" and row["verdict"] == "pass" and row["diagnosis_correct"] is True
    assert row["time_to_detect_s"] == pytest.approx(finished_run["time_to_detect_s"])
    table = await asyncio.to_thread(starter, "list", env=cli_env)
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if finished_run["workflow_id"] in x)
    assert "etcd1" in line and "pass" in line and "correct" in line
    assert f"{finished_run['time_to_restore_s']:.3f}" in line


async def test_status_of_a_finished_run_shows_the_verdict(finished_run, cli_env):
    proc = await asyncio.to_thread(starter, "status", finished_run["workflow_id"], env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "verdict: PASS" in proc.stdout and "etcd1" in proc.stdout


async def test_report_json_is_the_workflow_result(finished_run, cli_env):
    proc = await asyncio.to_thread(starter, "report", finished_run["workflow_id"], "--run-id",
                                   finished_run["run_id"], env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == finished_run


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


SVG = "{http://www.w3.org/2000/svg}"
# The only addresses a page may hold: the XML namespaces an inline SVG declares (names, never fetched).
SVG_NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def _group(svg: ET.Element, gid: str) -> ET.Element:
    (group,) = svg.iterfind(f".//{SVG}g[@id='{gid}']")
    return group


def _points(group: ET.Element) -> list[tuple[float, float]]:
    """The vertices of the (first) path drawn in a plot element's group."""
    d = group.find(f"{SVG}path").get("d")
    return [(float(x), float(y)) for x, y in re.findall(r"[ML] ([-\d.]+) ([-\d.]+)", d)]


async def test_html_report_is_self_contained_with_the_timeline_plot(finished_run, cli_env, tmp_path,
                                                                    isolated_chromium):
    out = tmp_path / "report.html"
    proc = await asyncio.to_thread(starter, "report", finished_run["workflow_id"], "--format", "html", "-o", str(out),
                                   env=cli_env)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    page = _Html()
    page.feed(text)
    tags = page.tags
    # Self-contained: no external script, stylesheet, image or address of any kind.
    assert not [t for t, a in tags if t in ("script", "link", "img", "iframe")]
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= SVG_NAMESPACES
    # The load timeline, and each operation's latency (the history is on this machine: the CLI ran the worker).
    assert [a["id"] for t, a in tags if t == "svg"] == ["timeline", "latency"]
    assert 'id="latency-ok"' in text and 'id="latency-fault-period"' in text
    svg = ET.fromstring(text[text.index("<svg"):text.index("</svg>") + len("</svg>")])
    windows = finished_run["load"]["windows"]
    # One point per load window on the throughput line (and one dot each): at least the baseline window and the
    # one the kill fell into; how many more depends on how fast etcd rejoins.
    line = _group(svg, "throughput")
    assert len(_points(line)) == len(line.findall(f"{SVG}g/{SVG}use")) == len(windows) >= 2
    # Errors are bars in a panel of their own under the throughput plot, one per window, as tall as they are many.
    throughput_bottom = max(y for _, y in _points(_group(svg, "throughput-axes").find(f"{SVG}g")))
    for number, window in enumerate(windows, 1):
        bar = _points(_group(svg, f"errors-window-{number}"))
        assert min(y for _, y in bar) > throughput_bottom
        assert (max(y for _, y in bar) - min(y for _, y in bar) > 0) == (window["errors"] > 0)
    # Inject, detect, restore marked in order; the fault period shaded from inject to restore.
    x = {name: _points(_group(svg, f"marker-{name}"))[0][0] for name in ("inject", "detect", "restore")}
    assert x["inject"] <= x["detect"] < x["restore"]
    shaded = [px for px, _ in _points(_group(svg, "fault-period"))]
    assert (min(shaded), max(shaded)) == pytest.approx((x["inject"], x["restore"]))
    words = " ".join(page.text)
    assert "PASS" in words and finished_run["diagnosis"]["summary"] in words
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report.html").write_text(text)

    # As a person opens it: offline, in a browser that asks for nothing beyond the file.
    requests: list[str] = []
    async with browser_page(isolated_chromium, ARTIFACTS / "report.png") as browser:
        browser.on("request", lambda request: requests.append(request.url))
        await browser.goto((ARTIFACTS / "report.html").as_uri())
        await browser.locator("#timeline").wait_for()
    assert requests == [(ARTIFACTS / "report.html").as_uri()]


def _junit_case(xml_text: str) -> tuple[ET.Element, ET.Element]:
    """Structural JUnit validation: testsuites > testsuite > testcase with the attributes CI tools read."""
    root = ET.fromstring(xml_text)
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for attr in ("name", "tests", "failures", "errors", "time", "timestamp"):
        assert attr in suite.attrib, attr
    (case,) = suite.findall("testcase")
    assert {"classname", "name", "time"} <= case.attrib.keys()
    float(case.get("time"))
    assert int(suite.get("tests")) == 1
    return suite, case


async def test_junit_of_a_passing_run_has_no_failure(finished_run, cli_env):
    proc = await asyncio.to_thread(starter, "report", finished_run["workflow_id"], "--format", "junit", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    suite, case = _junit_case(proc.stdout)
    assert suite.get("failures") == "0" and case.find("failure") is None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["target"] == "etcd1"


async def test_junit_of_a_failed_run_carries_the_reasons_and_exits_1(failed_run, cli_env):
    proc = await asyncio.to_thread(starter, "report", failed_run, "--format", "junit", env=cli_env)
    assert proc.returncode == 1, proc.stderr
    suite, case = _junit_case(proc.stdout)
    assert suite.get("failures") == "1"
    failure = case.find("failure")
    assert failure is not None and "stage detect failed" in failure.get("message")


async def test_markdown_report(failed_run, cli_env):
    proc = await asyncio.to_thread(starter, "report", failed_run, "--format", "md", env=cli_env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("# Chaos run: kill (fake) on n2 of etcd - FAIL")  # the label preflight gave
    assert "- stage detect failed" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["report", "no-such-run"], "no run no-such-run"),
    (["report", "x", "--format", "pdf"], "--format must be one of json, md, html, junit"),
    (["status", "no-such-run"], "no run no-such-run"),
    (["watch", "no-such-run"], "no run no-such-run"),
    (["advance", "no-such-run"], "no run no-such-run"),
    (["list", "--verdict", "meh"], "--verdict must be pass or fail"),
    (["list", "--subject", "nope"], "unknown subject 'nope'"),
])
async def test_bad_input_exits_2_with_one_line(cli_env, args, message):
    proc = await asyncio.to_thread(starter, *args, env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


async def test_watch_of_a_closed_run_points_to_status(failed_run, cli_env):
    proc = await asyncio.to_thread(starter, "watch", failed_run, env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: run {failed_run} is not running (FAILED); "
                                   f"`status {failed_run}` shows how it ended")


async def test_worker_on_a_server_that_refuses_our_search_attributes_says_so(tmp_path):
    """A server with no Bool slot left (3 is the SQL visibility limit) refuses ChaosDiagnosisCorrect."""
    taken = [SearchAttributeKey.for_bool(f"Other{i}") for i in range(3)]
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary(),
                                                data_converter=pydantic_data_converter, search_attributes=taken,
                                                dev_server_log_level="error")
    try:
        proc = await asyncio.to_thread(run_command, [sys.executable, "worker.py"],
                                       command_env(env.client.service_client.config.target_host, tmp_path), 60)
    finally:
        await env.shutdown()
    assert proc.returncode == 3, proc.stderr
    assert "cannot register search attributes" in proc.stderr
    assert f"--name {Attr.DIAGNOSIS_CORRECT.name} --type Bool" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
