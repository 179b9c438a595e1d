"""Hypothesis probes that ask something, on a real etcd cluster and a real dev server: a command run in the killed
member breaks while it is down (the run fails, exit 1, the report names the probe), and an HTTP probe against a
local fake (tests/fake_monitoring.py) holds for the whole run (the run passes). The samples are taken by the load
windows, so they are in the run's history as activity results."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import pytest

from durable_chaos.contracts import ChaosInput, LoadWindow, Probe, final_report
from tests.conftest import command_env, running_worker, starter, subject_args
from tests.fake_monitoring import FakeMonitoring
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (34000, 34990)
# etcd's image has no etcdctl: the member's own client port, from inside it, is its health here.
ANSWERS = '[bash, -c, "exec 3<>/dev/tcp/127.0.0.1/2379"]'


@pytest.fixture
def cli_env(client, tmp_path) -> dict[str, str]:
    return command_env(client.service_client.config.target_host, tmp_path)


async def test_an_exec_probe_in_the_killed_member_breaks_the_run_exit_1_and_is_named(cli_env, etcd, tmp_path):
    experiment = tmp_path / "probes.yaml"
    experiment.write_text(f"""subject: etcd
steps:
  - fault: kill
    target: etcd1
    duration: 4
timeouts: {{countdown: 1}}
hypothesis:
  - name: etcd1 answers
    exec: {{service: etcd1, command: {ANSWERS}}}
    mode: during
    tolerance: {{"==": 0}}
  - name: etcd2 answers
    exec: {{service: etcd2, command: {ANSWERS}}}
    mode: continuously
    tolerance: {{"==": 0}}
""")
    # Held 4 s: a probe is sampled once per load window (1 s), and a kill found and restored at once is down for
    # under 2 s (measured), which on a busy host can hold no sample at all (CI, session 10).
    proc = await asyncio.to_thread(starter, "run", str(experiment), "--json", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "fail" and report["fault_state"] == "restored", report["reasons"]
    victim, other = report["hypothesis"]
    assert (victim["name"], victim["held"]) == ("etcd1 answers", False), victim
    assert victim["samples"] >= 1 and victim["value"] != 0
    injected, healthy = (datetime.fromisoformat(report[k]) for k in ("injected_at", "restored_at"))
    assert injected <= datetime.fromisoformat(victim["failed_at"]) < healthy
    assert f"hypothesis broken: etcd1 answers: {victim['detail']}" in report["failed_because"]
    # the member that was never hit answered every sample of the run
    assert other["held"] and other["samples"] >= 3, other
    assert all((await etcd.running()).values())


async def test_an_http_probe_that_holds_passes_the_run(client, task_queue, etcd):
    with FakeMonitoring() as fake:
        probe = Probe.model_validate({"name": "monitoring healthy", "http": {"url": f"{fake.url}/health"},
                                      "mode": "continuously", "tolerance": {"==": 200}})
        body = Probe.model_validate({"http": {"url": f"{fake.url}/health", "json": "status"}, "mode": "after",
                                     "tolerance": {"matches": "^ok$"}})
        async with running_worker(client, task_queue):
            handle = await client.start_workflow(
                # A countdown of 3 s: three windows (three samples) before the fault, however fast it is undone
                # (with 1 s, a run restored within a window had 2 in CI).
                ChaosDemoWorkflow.run, ChaosInput(subject=etcd.ref, target="etcd3", countdown_s=3,
                                                  hypothesis=[probe, body]),
                id=f"t-probes-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            report = await asyncio.wait_for(final_report(handle), 120)
    timeline = [f"injected {report.injected_at:%T.%f}, healthy again {report.restored_at:%T.%f}"] + [
        f"window {w.start:%T.%f}-{w.end:%T.%f}: " + ", ".join(f"{s.at:%T.%f}" for s in w.probes.get(probe.label, []))
        for w in report.load.windows]
    assert report.verdict == "pass", "\n".join(report.reasons + timeline)
    held, field = report.hypothesis
    assert held.held and held.samples >= 3 and held.value == 200, held
    assert field.held and field.samples >= 1, field
    assert f"hypothesis held: monitoring healthy: {held.detail}" in report.reasons
    assert sum(a.startswith("/health") for a in fake.asked) >= held.samples
    # the samples came back in the load windows' results
    windows = report.load.windows
    assert all(isinstance(w, LoadWindow) for w in windows)
    assert sum(len(w.probes.get("monitoring healthy", [])) for w in windows) >= held.samples
