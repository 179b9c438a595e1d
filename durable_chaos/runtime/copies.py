"""Private copies of a subject (own compose project, own ports) for the tests and the benchmark.

A copy is named and torn down by its compose project, so whoever starts one can always remove exactly it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone

from python_on_whales import DockerClient

from activities.docker import bring_up, compose_client, ensure_image, open_session
from activities.engine import members
from durable_chaos.docker_engine import PROJECT_LABEL, SERVICE_LABEL, connect
from durable_chaos.faults.powerfs import remove_layers
from durable_chaos.contracts import CheckResult, SubjectRef
from subjects import SubjectInstance, resolve


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # die, kill, start, stop, pause, unpause, exec_start: ...
    service: str | None
    attributes: dict[str, str]
    time_ns: int


@contextlib.asynccontextmanager
async def container_events_recorded(label: str) -> AsyncIterator[list[ContainerEvent]]:
    """The engine's container events of containers with this label (`key` or `key=value`), recorded live from its
    event stream while inside, into the list yielded. Asked afterwards with `--since`, Docker answers from the last
    256 events of its whole engine, and a run on a subject whose checks exec into its members (three events an exec)
    pushed a kill's `die` out of them within the run (CI, session 28). Streamed events are not dropped."""
    events: list[ContainerEvent] = []

    async def pump(subscriber) -> None:
        while (event := await subscriber.get()) is not None:
            attributes = event.get("Actor", {}).get("Attributes", {})
            events.append(ContainerEvent(event.get("Action") or event.get("status", ""),
                                         attributes.get(SERVICE_LABEL), attributes, event["timeNano"]))

    async with connect() as docker:
        recording = asyncio.create_task(pump(docker.events.subscribe(
            filters=json.dumps({"type": ["container"], "label": [label]}))))
        try:
            async with asyncio.timeout(10):  # subscribed only once the engine answered the request
                while docker.events.json_stream is None:
                    await asyncio.sleep(0.01)
            yield events
        finally:
            await docker.events.stop()
            recording.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recording


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
        self._events: list[ContainerEvent] | None = None  # recorded inside `events_recorded`

    def up(self) -> None:
        ensure_image(self.instance)
        bring_up(compose_client(self.instance))

    def down(self) -> None:
        # The client of now: a storage fault's run may have put the members on power-loss layers since.
        compose_client(self.instance).compose.down(volumes=True, remove_orphans=True, quiet=True, timeout=1)
        remove_layers(self.instance.project)

    @contextlib.asynccontextmanager
    async def events_recorded(self) -> AsyncIterator[None]:
        """Record the copy's container events live while inside (`container_events_recorded`)."""
        async with container_events_recorded(f"{PROJECT_LABEL}={self.instance.project}") as events:
            self._events = events
            yield

    async def container_events(self, since: datetime, **filters: str) -> list[ContainerEvent]:
        """The copy's container events since `since` exactly (one of the same second but before it, the copy's own
        start or the previous test's kill, is not one), as recorded inside `events_recorded`. `event=` keeps one
        action. Awaited, so a caller's event loop that serves in-process workers is never held."""
        if self._events is None:
            raise RuntimeError("container_events needs the copy's events recorded (SubjectCopy.events_recorded)")
        await asyncio.sleep(0.2)  # the engine streams an event a moment after it happened
        after = since.timestamp() * 1e9
        wanted = filters.get("event")
        return [e for e in self._events if e.time_ns >= after and (wanted is None or e.action == wanted)]

    async def deaths_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """(service, time) of every container death since `since`, from Docker's own record of it."""
        return [(e.service, datetime.fromtimestamp(e.time_ns / 1e9, timezone.utc))
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

    async def recreate_if_broken(self, settle_s: float = 30) -> str | None:
        """Whoever shares one copy across several faults (a test module, the benchmark's fault matrix): if the copy
        is still unhealthy `settle_s` after the last fault, tear it down and bring up a fresh one, so one fault that
        broke it does not fail everything after it. Returns what was done, for the caller's record (None: it was
        healthy)."""
        check = await self.wait_healthy(timeout=settle_s)
        if check.ok:
            return None
        why = f"copy still unhealthy ({'; '.join(check.violations)})"
        await asyncio.to_thread(self.down)
        await asyncio.to_thread(self.up)
        fresh = await self.wait_healthy(timeout=180)
        return f"{why}: recreated, {'healthy' if fresh.ok else 'still unhealthy: ' + '; '.join(fresh.violations)}"
