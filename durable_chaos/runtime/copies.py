"""Private copies of a subject (own compose project, own ports) for the tests and the benchmark.

A copy is named and torn down by its compose project, so whoever starts one can always remove exactly it.
"""

from __future__ import annotations

import asyncio
import random
import socket
from datetime import datetime, timedelta, timezone

from python_on_whales import DockerClient

from activities.docker import bring_up, compose_client, ensure_image, open_session
from activities.engine import members
from durable_chaos.docker_engine import connect
from durable_chaos.faults.powerfs import remove_layers
from durable_chaos.contracts import CheckResult, SubjectRef
from subjects import SubjectInstance, resolve


def _ports_free(base: int, count: int) -> bool:
    for port in range(base + 1, base + count + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_base(count: int = 3, low: int = 24000, high: int = 24990, taken: set[int] = frozenset()) -> int:
    """A port base whose next `count` ports are free. Callers pick from their own range to avoid clashes;
    `taken` holds bases already handed out but not bound yet."""
    for _ in range(200):
        base = random.randrange(low, high, 10)
        if base not in taken and _ports_free(base, count):
            return base
    raise RuntimeError(f"no free port range for a subject copy in {low}-{high}")


class SubjectCopy:
    """One copy of a subject, with helpers that read Docker's own record of what happened."""

    def __init__(self, ref: SubjectRef):
        self.ref = ref
        self.instance: SubjectInstance = resolve(ref)
        self.docker: DockerClient = compose_client(self.instance)

    def up(self) -> None:
        ensure_image(self.instance)
        bring_up(compose_client(self.instance))

    def down(self) -> None:
        # The client of now: a storage fault's run may have put the members on power-loss layers since.
        compose_client(self.instance).compose.down(volumes=True, remove_orphans=True, quiet=True, timeout=1)
        remove_layers(self.instance.project)

    async def container_events(self, since: datetime, **filters: str) -> list:
        """The copy's container events from Docker's own event log, since `since` exactly: one of the same second
        but before it (the copy's own start, the previous test's kill) is not one. Docker is asked from a second
        earlier, and the events are kept by their own nanosecond time. `docker events` runs in a thread: the
        caller's event loop may be serving in-process workers, whose heartbeats must not wait for it."""
        events = await asyncio.to_thread(
            self.docker.system.events, since=since - timedelta(seconds=1), until=datetime.now(timezone.utc),
            filters={"label": f"com.docker.compose.project={self.instance.project}", "type": "container", **filters})
        after = since.timestamp() * 1e9
        return [e for e in events if e.time_nano >= after]

    async def deaths_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """(service, time) of every container death since `since`, from Docker's own event log."""
        return [(e.actor.attributes["com.docker.compose.service"],
                 datetime.fromtimestamp(e.time_nano / 1e9, timezone.utc))
                for e in await self.container_events(since, event="die")]

    async def died_since(self, since: datetime) -> list[str]:
        return [service for service, _ in await self.deaths_since(since)]

    async def running(self) -> dict[str, bool]:
        """service -> whether its container runs, as Docker's State.Running says (a paused one does): one Engine API
        request, awaited, not `docker compose ps` (a process that parses the project)."""
        async with connect() as docker:
            found = await members(docker, self.instance)
        states = {m.service: m.state in ("running", "paused") for m in found.values()}
        return {svc: states.get(svc, False) for svc in self.instance.subject.services}

    async def check(self, timeout: float = 1.0) -> CheckResult:
        async with open_session(self.instance) as session:
            return await session.check(timeout)

    async def wait_healthy(self, timeout: float = 90) -> CheckResult:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = await self.check()
            if result.ok or asyncio.get_running_loop().time() > deadline:
                return result
            await asyncio.sleep(0.3)
