"""What an operator watches: the worker's Prometheus endpoint, the Grafana dashboard over it, webhooks when a run
ends, and OpenTelemetry traces.

Real `python worker.py` processes (metrics scraped over HTTP as Prometheus would), a real etcd copy in Docker, a
real Temporal dev server; the webhook and OTLP receivers are plain HTTP servers on 127.0.0.1 in this process.
The tests share one metrics worker and run in file order: the dashboard test checks its queries against a worker
that has done what the earlier tests did (a run, a notification that kept failing).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from durable_chaos.contracts import (
    NOTIFY_WORKFLOW_NAME,
    ChaosInput,
    NotifyRequest,
    RunNotice,
    final_report,
)
from durable_chaos.ids import notify_id
from tests.conftest import (
    ROOT,
    command_env,
    free_port,
    starter,
    subject_args,
    until,
    walk_to_end,
    walk_to_gate,
)
from tests.workers import WorkerProcess
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (38000, 38990)
DASHBOARD = ROOT / "durable_chaos" / "observability" / "grafana-dashboard.json"
# The worker's own webhook: a token in the path, as a Slack webhook URL has. It must never enter a history.
WORKER_HOOK = f"/hook/worker-secret-{uuid.uuid4().hex[:8]}"


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 200 to every POST and keeps (path, body, time received)."""

    def __init__(self):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append((self.path, body, time.time()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def json_posts(self, path: str) -> list[dict]:
        return [json.loads(body) for p, body, _ in self.posts if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """The worker's /metrics as (name, labels, value) samples, read as Prometheus reads the text format."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        found = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert found, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(2) or ""))
        samples.append((found.group(1), labels, float(found.group(3))))
    return samples


def sample(samples, name: str, **labels: str) -> float:
    """The sum of `name` over the series carrying `labels` (0 when there is none yet)."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def metrics_worker(temporal_env, receiver, tmp_path_factory):
    """`python worker.py` with CHAOS_METRICS_ADDRESS and CHAOS_NOTIFY_URL, on a task queue of its own."""
    queue, port = f"t-{uuid.uuid4().hex[:10]}", free_port()
    worker = WorkerProcess(temporal_env.client.service_client.config.target_host, queue,
                           tmp_path_factory.mktemp("metrics-worker"), CHAOS_METRICS_ADDRESS=f"127.0.0.1:{port}",
                           CHAOS_NOTIFY_URL=receiver.url + WORKER_HOOK).wait_ready()
    worker.queue, worker.port = queue, port
    yield worker
    worker.stop()


async def history_text(client, workflow_id: str, run_id: str | None = None) -> str:
    return (await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).to_json()


async def test_metrics_follow_a_run(client, etcd, metrics_worker):
    port, queue = metrics_worker.port, metrics_worker.queue
    labels = {"subject": "etcd", "fault": "kill", "task_queue": queue}
    before = scrape(port)
    handle = await client.start_workflow(ChaosDemoWorkflow.run, ChaosInput(subject=etcd.ref, countdown_s=0,
                                                                           interactive=True),
                                         id=etcd.instance.project, task_queue=queue)
    await walk_to_gate(handle, "detect")  # held with the fault on
    _, took = await until(15, lambda: asyncio.to_thread(
        lambda: sample(scrape(port), "chaos_faults_injected", task_queue=queue) == 1))
    print(f"gauge saw the fault after {took:.1f} s")
    await walk_to_end(handle)
    report = await final_report(handle)
    assert report.verdict == "pass", report.reasons
    after = scrape(port)
    assert sample(after, "chaos_runs", verdict="pass", **labels) == sample(before, "chaos_runs", verdict="pass",
                                                                            **labels) + 1
    for histogram, seconds in (("chaos_time_to_detect_seconds", report.time_to_detect_s),
                               ("chaos_time_to_restore_seconds", report.time_to_restore_s)):
        assert sample(after, f"{histogram}_count", **labels) == 1
        assert sample(after, f"{histogram}_sum", **labels) == pytest.approx(seconds)
        # Our buckets, not the SDK's default millisecond ones: the observation falls in a bucket of a few seconds.
        assert sample(after, f"{histogram}_bucket", le="5", **labels) == 1
    assert report.safety.verdict == "ok"
    assert [v for n, lab, v in after if n == "chaos_safety_violations" and lab.get("task_queue") == queue] == [0]
    await until(15, lambda: asyncio.to_thread(
        lambda: sample(scrape(port), "chaos_faults_injected", task_queue=queue) == 0))
    # The SDK's own metrics come along on the same endpoint.
    assert sample(after, "temporal_workflow_completed", task_queue=queue) >= 1


async def test_webhooks_get_the_summary(client, etcd, metrics_worker, receiver):
    report = await client.execute_workflow(
        ChaosDemoWorkflow.run,
        ChaosInput(subject=etcd.ref, countdown_s=0, notify_url=receiver.url + "/hook/run"),
        id=etcd.instance.project, task_queue=metrics_worker.queue)
    assert report.verdict == "pass", report.reasons

    def posted(path):
        return [p for p in receiver.json_posts(path) if p["run_id"] == report.run_id]

    # The --notify URL and the worker's CHAOS_NOTIFY_URL each get one post.
    await until(15, lambda: asyncio.to_thread(lambda: posted("/hook/run") and posted(WORKER_HOOK)))
    notice = posted("/hook/run")[0]
    assert posted(WORKER_HOOK) == [notice]
    received = min(at for path, _, at in receiver.posts if path == "/hook/run")
    print(f"report built -> webhook received: {received - report.finished_at.timestamp():.3f} s")
    print(json.dumps(notice, indent=1))
    assert notice["verdict"] == "pass"
    assert (notice["subject"], notice["fault"], notice["workflow_id"]) == ("etcd", "kill", etcd.instance.project)
    assert notice["targets"] == report.targets
    assert notice["time_to_detect_s"] == report.time_to_detect_s
    assert notice["safety"] == "ok"
    text = notice["text"]
    assert 1 <= len(text.splitlines()) <= 2
    for part in ("PASS", report.targets[0], "etcd", f"{report.time_to_detect_s:.3f} s",
                 f"{report.time_to_restore_s:.3f} s", "data safety ok", etcd.instance.project):
        assert part in text, (part, text)
    # The worker's webhook (a credential) is read by the activity only: in neither the run's nor the notifier's
    # history.
    for workflow_id in (etcd.instance.project, notify_id(etcd.instance.project, report.run_id)):
        assert WORKER_HOOK not in await history_text(client, workflow_id)


async def test_a_dead_receiver_changes_nothing(client, etcd, metrics_worker, receiver):
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    report = await client.execute_workflow(
        ChaosDemoWorkflow.run, ChaosInput(subject=etcd.ref, countdown_s=0, notify_url=dead),
        id=etcd.instance.project, task_queue=metrics_worker.queue)
    assert report.verdict == "pass", report.reasons
    assert all((await etcd.running()).values()), (await etcd.running())
    assert (await etcd.check()).ok
    # The run closed right after its report was built: it did not wait for the receiver.
    events = (await client.get_workflow_handle(report.workflow_id, run_id=report.run_id).fetch_history()).events
    closed = next(e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    lag = closed.event_time.ToDatetime().timestamp() - report.finished_at.timestamp()
    print(f"report built -> run closed: {lag:.3f} s")
    assert lag < 2, lag
    # Meanwhile its notifier retries the dead one, and the live receiver (the worker's) got its post all the same.
    notifier = client.get_workflow_handle(notify_id(report.workflow_id, report.run_id))

    async def retrying():
        desc = await notifier.describe()
        return desc.status == WorkflowExecutionStatus.RUNNING and any(
            a.attempt >= 2 for a in desc.raw_description.pending_activities)
    await until(15, retrying)

    async def posted():  # the live post is its own notifier's activity: it may land a moment after (CI27)
        return [p for p in receiver.json_posts(WORKER_HOOK) if p["run_id"] == report.run_id]
    await until(10, posted)
    await notifier.terminate(reason="test done: the receiver is dead for good")


async def test_chaos_notify_on_the_command_line(client, etcd, receiver, tmp_path):
    """`chaos --notify` as a user types it, with no worker running: the starter's own worker delivers the post
    before the command returns."""
    env = command_env(client.service_client.config.target_host, tmp_path, CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")
    result = await asyncio.to_thread(starter, "chaos", *subject_args(etcd), "--countdown", "0", "--json",
                                     "--notify", receiver.url + "/hook/cli", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(p["run_id"], p["verdict"]) for p in receiver.json_posts("/hook/cli")] == [(report["run_id"], "pass")]


def test_dashboard_queries_only_what_the_worker_exposes(metrics_worker):
    dashboard = json.loads(DASHBOARD.read_text())  # valid JSON, and a Grafana dashboard
    assert dashboard["title"] and dashboard["schemaVersion"] >= 30
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 6 and all(panel.get("title") for panel in dashboard["panels"])
    queried = {name for expr in exprs for name in re.findall(r"\b((?:chaos|temporal)_[a-z0-9_]+)\b", expr)}
    exposed = {name for name, _, _ in scrape(metrics_worker.port)}
    assert queried <= exposed, f"the dashboard queries metrics the worker does not expose: {queried - exposed}"
    assert {"chaos_runs", "chaos_time_to_detect_seconds_bucket", "chaos_time_to_restore_seconds_bucket",
            "chaos_faults_injected", "chaos_safety_violations"} <= queried


def test_bad_notify_url_is_refused_before_anything_starts(tmp_path):
    env = command_env("127.0.0.1:1", tmp_path)  # no server there: nothing may be contacted anyway
    for args in (["chaos", "--notify", "hooks.example.com/x"], ["schedule", "create", "--notify", "ftp://host/x"]):
        result = starter(*args, env=env, timeout=60)
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1 and "--notify" in result.stderr, result.stderr
    with pytest.raises(ValidationError, match="notify_url"):
        ChaosInput(notify_url="http://host:99999/x")


def test_worker_refuses_a_malformed_notify_url(temporal_env, tmp_path):
    worker = WorkerProcess(temporal_env.client.service_client.config.target_host, "t-unused", tmp_path,
                           CHAOS_NOTIFY_URL="hooks.example.com/no-scheme")
    assert worker.proc.wait(30) == 2
    worker.stop()
    assert worker.log.read_text().strip().splitlines() == [
        "error: CHAOS_NOTIFY_URL is not an http(s) URL with a host: 'hooks.example.com/no-scheme'"]


def spans_in(receiver: Receiver) -> list[str]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    names = []
    for path, body, _ in receiver.posts:
        if path == "/v1/traces":
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                names += [span.name for scope in resource.scope_spans for span in scope.spans]
    return names


async def test_traces_reach_an_otlp_receiver(client, tmp_path):
    otlp, hook = Receiver(), Receiver()
    queue = f"t-{uuid.uuid4().hex[:10]}"
    worker = WorkerProcess(client.service_client.config.target_host, queue, tmp_path,
                           OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="200").wait_ready()
    try:
        # The cheapest real workflow with an activity: a notification, here to a live receiver.
        notice = RunNotice(text="t", workflow_id="w", run_id="r", subject="etcd", project="p", fault="kill",
                           verdict="pass", started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:01Z")
        await client.execute_workflow(NOTIFY_WORKFLOW_NAME, NotifyRequest(notice=notice, urls=[hook.url + "/x"]),
                                      id=f"t-traced-{uuid.uuid4().hex[:8]}", task_queue=queue)
        names, took = await until(15, lambda: asyncio.to_thread(
            lambda: (n := spans_in(otlp)) and "RunActivity:post_notice" in n and n))
        print(f"spans after {took:.1f} s: {sorted(set(names))}")
        assert "RunWorkflow:NotifyWorkflow" in names
    finally:
        worker.stop()
        otlp.close()
        hook.close()


def test_without_the_tracing_extra_one_warning_and_no_tracing(temporal_env, tmp_path):
    # The extra's SDK made unimportable, as on an install without `.[tracing]`.
    hide_sdk = ("import runpy, sys; sys.modules['opentelemetry.sdk'] = None; sys.argv = ['worker.py']; "
                "runpy.run_path('worker.py', run_name='__main__')")
    worker = WorkerProcess(temporal_env.client.service_client.config.target_host, f"t-{uuid.uuid4().hex[:10]}",
                           tmp_path, python_args=["-c", hide_sdk],
                           OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1").wait_ready()
    worker.stop()
    warnings = [line for line in worker.log.read_text().splitlines() if "tracing" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: OTEL_EXPORTER_OTLP_ENDPOINT is set but the tracing extra is not "
                                  "installed (opentelemetry.sdk"), warnings
    assert warnings[0].endswith("running without tracing (pip install -e '.[tracing]')"), warnings

