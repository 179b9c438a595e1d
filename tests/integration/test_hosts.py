"""A worker per Docker host, on two real Docker engines on this machine (the second one started by the fixture,
tests/second_engine.py), one real dev server, and real etcd copies: host `a` is the machine's engine, host `b` the
second. Each host's worker is `python worker.py --host NAME` in a process of its own, as a user runs it.

What a user relies on: a run touches only its host's engine; a host whose worker dies keeps its fault pending, says
so, and a new worker of that host restores it; a run for a host that cannot take it is refused before anything
starts; the fleet view and the emergency stop cover every host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError

from durable_chaos.contracts import (
    WORKFLOW_NAME,
    Admission,
    ChaosInput,
    FaultState,
    Progress,
    SubjectRef,
    WorkerSeen,
    report_of_failure,
)
from durable_chaos.ids import host_queue, run_workflow_id
from durable_chaos.runtime.copies import free_port_base
from durable_chaos.runtime.fleet import pollers, register
from tests.conftest import ROOT, command_env, starter, until, walk_to_gate
from tests.second_engine import second_docker_engine
from workflows.chaos import ChaosDemoWorkflow

IMAGES = ["chaos-etcd:3.5.16", "chaos-nettools:bookworm"]
PORT_RANGES = {"a": (26000, 26490), "b": (26500, 26990)}


@dataclass
class Fleet:
    client: Client
    queue: str
    env: dict[str, str]  # the CLI's and host a's worker's (the machine's engine)
    engine_b: object
    engine_a_id: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    projects: dict[str, list[str]] = field(default_factory=lambda: {"a": [], "b": []})

    def host_env(self, host: str) -> dict[str, str]:
        return self.engine_b.env(**{k: v for k, v in self.env.items() if k.startswith(("TEMPORAL", "CHAOS"))}) \
            if host == "b" else self.env

    def copy(self, host: str) -> SubjectRef:
        """A subject copy of its own on `host` (brought up by the run's preflight there), torn down at the end."""
        project = f"t-{host}-{uuid.uuid4().hex[:6]}"
        self.projects[host].append(project)
        return SubjectRef(name="etcd", project=project, port_base=free_port_base(3, *PORT_RANGES[host]), host=host)

    async def start_worker(self, host: str, *extra: str) -> subprocess.Popen:
        log = self.logs.setdefault(host, Path(self.env["CHAOS_STATE_DIR"]) / f"worker-{host}.log")
        proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py"), "--host", host, *extra],
                                cwd=ROOT, env=self.host_env(host), stdout=log.open("a"), stderr=subprocess.STDOUT)
        self.workers[host] = proc

        async def polling():
            assert proc.poll() is None, log.read_text()[-2000:]
            return any(p.identity.startswith(f"{proc.pid}@") for p in await pollers(self.client,
                                                                                   host_queue(self.queue, host)))
        await until(60, polling)
        return proc

    def docker(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=self.host_env(host), timeout=60)

    def kills(self, host: str, since: datetime) -> list[str]:
        """Compose services killed on `host`'s engine since `since`, among this module's copies, from its event log."""
        out = self.docker(host, "events", "--since", str(int(since.timestamp())), "--until",
                          str(int(time.time()) + 1), "--filter", "type=container", "--filter", "event=kill",
                          "--format", "{{json .}}").stdout
        ours = set(self.projects["a"] + self.projects["b"])
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [f"{e['Actor']['Attributes']['com.docker.compose.project']}/"
                f"{e['Actor']['Attributes']['com.docker.compose.service']}" for e in events
                if e["Actor"]["Attributes"].get("com.docker.compose.project") in ours]

    def running(self, host: str, project: str, service: str) -> bool:
        out = self.docker(host, "inspect", "-f", "{{.State.Running}}", f"{project}-{service}-1").stdout.strip()
        return out == "true"


@pytest_asyncio.fixture(scope="module")
async def fleet(temporal_env, tmp_path_factory):
    client = temporal_env.client
    state = tmp_path_factory.mktemp("hosts")
    queue = f"t-{uuid.uuid4().hex[:10]}"
    env = command_env(client.service_client.config.target_host, state, CHAOS_TASK_QUEUE=queue)
    env.pop("DOCKER_HOST", None)
    with second_docker_engine() as engine_b:
        await asyncio.to_thread(engine_b.load_images, IMAGES)
        engine_a_id = subprocess.run(["docker", "info", "--format", "{{.ID}}"], capture_output=True, text=True,
                                     timeout=30).stdout.strip()
        f = Fleet(client=client, queue=queue, env=env, engine_b=engine_b, engine_a_id=engine_a_id)
        try:
            await f.start_worker("a")
            await f.start_worker("b", "--subjects", "etcd")
            yield f
        finally:
            for proc in f.workers.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in f.workers.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(20)
                if proc.poll() is None:
                    proc.kill()
            for host, projects in f.projects.items():
                for project in projects:
                    f.docker(host, "compose", "-p", project, "down", "-v", "-t", "1")


def campaign_file(tmp: Path, fleet: Fleet, a: SubjectRef, b: SubjectRef) -> Path:
    path = tmp / "two-hosts.yaml"
    path.write_text(f"""campaign: t-two-hosts-{uuid.uuid4().hex[:6]}
parallelism: 2
experiment:
  timeouts: {{countdown: 1}}
matrix:
  subjects:
    - {{subject: etcd, project: {a.project}, port_base: {a.port_base}, host: a}}
    - {{subject: etcd, project: {b.project}, port_base: {b.port_base}, host: b}}
  faults: [kill]
""")
    return path


async def test_a_campaign_with_a_cell_per_host_runs_both_at_once_each_killing_only_on_its_own_engine(fleet, tmp_path):
    a, b = fleet.copy("a"), fleet.copy("b")
    since = datetime.now(timezone.utc)
    result = await asyncio.to_thread(starter, "run", str(campaign_file(tmp_path, fleet, a, b)), "--json",
                                     env=fleet.env, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    for c in report["cells"]:
        print(f"cell {c['key']}: {c['state']}, hit {c['targets']}, TTD {c['time_to_detect_s']:.3f} s, TTR "
              f"{c['time_to_restore_s']:.3f} s, safety {c['safety']}, {c['started_at']} -> {c['finished_at']}, "
              f"run {c['workflow_id']}")
    cells = {c["host"]: c for c in report["cells"]}
    assert set(cells) == {"a", "b"} and all(c["state"] == "pass" for c in cells.values()), report["cells"]
    # Both at once: each cell started before the other finished.
    assert cells["a"]["started_at"] < cells["b"]["finished_at"] and cells["b"]["started_at"] < cells["a"]["finished_at"]
    # Each engine's own event log: exactly its own cell's kill, and nothing of the other's.
    kills_a, kills_b = fleet.kills("a", since), fleet.kills("b", since)
    print(f"engine a kills: {kills_a}\nengine b kills: {kills_b}")
    assert kills_a == [f"{a.project}/{cells['a']['targets'][0]}"]
    assert kills_b == [f"{b.project}/{cells['b']['targets'][0]}"]
    assert cells["a"]["workflow_id"] == run_workflow_id(a.project, "a")
    assert cells["b"]["workflow_id"] == run_workflow_id(b.project, "b")


async def history_identities(handle) -> dict[str, set[str]]:
    """activity type -> the identities of the workers that started it."""
    scheduled, out = {}, {}
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            out.setdefault(scheduled[a.scheduled_event_id], set()).add(a.identity)
    return out


async def test_host_b_worker_killed_with_its_fault_on_the_run_waits_and_a_new_worker_of_b_restores(fleet):
    b = fleet.copy("b")
    handle = await fleet.client.start_workflow(
        ChaosDemoWorkflow.run, ChaosInput(subject=b, fault="kill", target="etcd2", countdown_s=1, interactive=True),
        id=run_workflow_id(b.project, "b"), task_queue=fleet.queue, search_attributes=ChaosInput(
            subject=b).start_attributes())
    first_b = fleet.workers["b"]
    try:
        await walk_to_gate(handle, "detect")  # etcd2 on engine b is killed
        assert not fleet.running("b", b.project, "etcd2")
        print((await asyncio.to_thread(starter, "workers", env={**fleet.env, "COLUMNS": "150"})).stdout)
        view = await asyncio.to_thread(starter, "workers", "--json", env=fleet.env)
        hosts = {h["host"]: h for h in json.loads(view.stdout)}
        assert hosts["b"]["up"] and hosts["b"]["engine_id"] == fleet.engine_b.engine_id
        assert hosts["a"]["up"] and hosts["a"]["engine_id"] == fleet.engine_a_id
        assert [(r["workflow_id"], r["fault_state"]) for r in hosts["b"]["runs"]] == [(handle.id, "injected")]

        t0 = time.monotonic()
        first_b.send_signal(signal.SIGKILL)
        first_b.wait(10)
        abort = asyncio.create_task(handle.execute_update("abort", "test: restore now", result_type=Progress))

        async def waiting():
            with contextlib.suppress(Exception):
                p = await handle.query(ChaosDemoWorkflow.progress)
                return p if p.waiting_for_host == "b" else None
        progress, _ = await until(60, waiting)
        said_waiting = time.monotonic() - t0
        assert progress.fault_state == FaultState.INJECTED and "waiting for a worker on host b" in progress.message
        status = await asyncio.to_thread(starter, "status", handle.id, env=fleet.env)
        assert "waiting for a worker on host b" in status.stdout, status.stdout
        assert not fleet.running("b", b.project, "etcd2")  # nobody else restored it meanwhile

        await asyncio.sleep(5)
        new_b = await fleet.start_worker("b", "--subjects", "etcd")
        came_back = time.monotonic() - t0
        await asyncio.wait_for(abort, 120)
        restored = time.monotonic() - t0
        try:
            report = await handle.result()
        except WorkflowFailureError as err:  # aborted before detection: a fail verdict, with its report
            report = report_of_failure(err)
    finally:
        with contextlib.suppress(Exception):
            await handle.terminate(reason="test cleanup")
    print(f"timeline (s after host b's worker was SIGKILLed): run said it waits for host b {said_waiting:.1f}, "
          f"new worker of b polling {came_back:.1f}, restore done {restored:.1f}")
    assert report.fault_state == FaultState.RESTORED and report.host == "b", report.reasons
    assert fleet.running("b", b.project, "etcd2")
    # Host a was never touched: every activity that touches the subject ran on one of host b's two workers.
    b_workers = (f"{first_b.pid}@", f"{new_b.pid}@")
    for activity_type, who in (await history_identities(handle)).items():
        if activity_type not in ("diagnose", "post_notice"):
            assert all(i.startswith(b_workers) for i in who), (activity_type, who, b_workers)


async def _started_runs(client: Client, queue: str) -> int:
    return (await client.count_workflows(f'WorkflowType="{WORKFLOW_NAME}" AND TaskQueue="{queue}"')).count


async def test_runs_a_host_cannot_take_are_refused_with_one_line_and_nothing_started(fleet, tmp_path):
    before = await _started_runs(fleet.client, fleet.queue)
    # A host that has a record but no worker polling (its only worker never came, or died long ago).
    await register(fleet.client, fleet.queue, WorkerSeen(
        identity="gone@elsewhere", host="ghost", engine_id="GHOST:ENGINE", engine_version="20.10",
        docker_host="unix:///nowhere", started_at=datetime.now(timezone.utc), admission=Admission(unrestricted=True)))
    cases = {
        "unknown host": (["chaos", "--host", "nowhere"], 6, "unknown host 'nowhere'"),
        "no worker now": (["chaos", "--host", "ghost"], 3, "host 'ghost' has no worker polling now"),
        "subject not allowed": (["chaos", "--host", "b", "--subject", "nats"], 9,
                                "subject 'nats' is not allowed on host b's worker"),
        "folder not on host": (["chaos", "--host", "b", "--subject", str(ROOT / "tests/data/my-subject")], 8,
                               "is not one host b's worker serves"),
    }
    for what, (args, code, says) in cases.items():
        result = await asyncio.to_thread(starter, *args, "--countdown", "0", env=fleet.env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == code and len(lines) == 1 and says in lines[0], (what, result.returncode,
                                                                                     result.stderr)
        if code in (3, 6):
            assert "hosts up: a, b" in lines[0], lines[0]
    assert await _started_runs(fleet.client, fleet.queue) == before
    # A worker for host a on engine b: the name was first seen with another engine, so it refuses to start.
    began = time.monotonic()
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, str(ROOT / "worker.py"), "--host", "a"],
                                   cwd=ROOT, env=fleet.host_env("b"), capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 7 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert f"was first seen with Docker engine {fleet.engine_a_id}" in lines[0] and fleet.engine_b.engine_id in lines[0]
    print(f"refused in {time.monotonic() - began:.1f} s: {lines[0]}")


async def test_stop_all_with_runs_on_both_hosts_restores_both(fleet):
    runs = {}
    for host in ("a", "b"):
        ref = fleet.copy(host)
        runs[host] = (ref, await fleet.client.start_workflow(
            ChaosDemoWorkflow.run, ChaosInput(subject=ref, fault="kill", target="etcd3", countdown_s=1,
                                              interactive=True),
            id=run_workflow_id(ref.project, host), task_queue=fleet.queue,
            search_attributes=ChaosInput(subject=ref).start_attributes()))
    try:
        await asyncio.gather(*(walk_to_gate(handle, "detect") for _, handle in runs.values()))
        assert not any(fleet.running(h, ref.project, "etcd3") for h, (ref, _) in runs.items())
        result = await asyncio.to_thread(starter, "stop-all", "--wait-s", "120", env=fleet.env, timeout=200)
    finally:
        for _, handle in runs.values():
            with contextlib.suppress(Exception):
                await handle.terminate(reason="test cleanup")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    for host, (ref, handle) in runs.items():
        assert f"host {host}: 1 run(s) closed, 1 fault(s) restored (kill on etcd3)" in result.stdout, result.stdout
        assert fleet.running(host, ref.project, "etcd3"), host
