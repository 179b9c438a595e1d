"""Blocking calls to the Docker Engine API, for code that runs in a thread: fault kinds, and image checks.

Fault kinds act on a member's container through python-on-whales' `Container`, which spawns a `docker` process for
every inspect and every kill, start, stop, pause and unpause. A kill run spawned 23 of them (counted with a PATH
shim, session 15), and at 20 copies on one worker their CPU (8.5 s in a 34-s step) came close to the worker's own
(9.8 s) on a machine with no core to spare. `EngineContainer` is that same `Container` (every attribute a fault
kind reads keeps its meaning: `docker container inspect` prints the Engine API's own JSON) whose inspect and those
five calls go over the socket instead (aiodocker). Compose, builds and helper containers stay on the CLI.

Errors keep python-on-whales' types, because fault kinds catch them: a missing container is `NoSuchContainer`,
another refusal a `DockerException` with the engine's message, and an engine that does not answer says "Cannot
connect to the Docker daemon", which activities turn into DockerUnavailable (activities/docker.py `off_loop`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Awaitable, Callable, TypeVar

import aiodocker
import aiohttp
from python_on_whales import Container, DockerException
from python_on_whales.exceptions import NoSuchContainer

T = TypeVar("T")
# The labels compose puts on a project's containers: which project, which service.
SERVICE_LABEL, PROJECT_LABEL = "com.docker.compose.service", "com.docker.compose.project"

# The engine's API version, once known. aiodocker asks the engine for it (GET /version) before the first request of
# every connection: with a connection per call, half the requests were that question (py-spy, 20 copies).
_api_version = "auto"


def connect() -> aiodocker.Docker:
    """A connection to the engine that `DOCKER_HOST` names (as for the CLI); close it, or use `async with`."""
    return aiodocker.Docker(api_version=_api_version)


def remember_version(docker: aiodocker.Docker) -> None:
    global _api_version
    if docker.api_version != "auto":
        _api_version = docker.api_version


def engine_call(what: str, fn: Callable[[aiodocker.Docker], Awaitable[T]]) -> T:
    """`fn` with a connection to the engine (`DOCKER_HOST`, as for the CLI), on an event loop of this thread's own:
    callers are blocking code in a worker thread. `what` names the call in errors ("kill <id>"). Called on a thread
    that runs an event loop (a test's helper), it blocks that loop as the CLI did, from a thread of its own."""
    async def call() -> T:
        async with connect() as docker:
            try:
                return await fn(docker)
            finally:
                remember_version(docker)
    try:
        if _loop_running():
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, call()).result()
        return asyncio.run(call())
    except aiodocker.DockerError as exc:
        if exc.status == NO_CONNECTION:
            raise _unreachable(what, exc.message) from exc
        cls = NoSuchContainer if exc.status == 404 and what.startswith("container") else DockerException
        raise cls(["engine-api", *what.split()], exc.status,
                  stderr=f"Error response from daemon: {exc.message}".encode()) from exc
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise _unreachable(what, str(exc)) from exc


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


NO_CONNECTION = 900  # aiodocker's status for an engine it could not connect to


def _unreachable(what: str, why: str) -> DockerException:
    # The CLI's own words, which activities/docker.py `off_loop` reads as "Docker is not reachable".
    return DockerException(["engine-api", *what.split()], 1,
                           stderr=f"Cannot connect to the Docker daemon: {why}".encode())


def image_exists(ref: str) -> bool:
    """Is the image built (or loaded) on this engine? A missing image and an engine that does not answer are both
    False, as `docker image inspect` says."""
    try:
        engine_call(f"image inspect {ref}", lambda d: d.images.inspect(ref))
    except DockerException:
        return False
    return True


class EngineContainer(Container):
    """python-on-whales' Container whose inspect and kill/start/stop/pause/unpause use the Engine API."""

    def _fetch_inspect_result_json(self, reference: str) -> dict[str, Any]:
        return engine_call(f"container inspect {reference}", lambda d: d.containers.container(reference).show())

    def _act(self, verb: str, **params: Any) -> None:
        cid = self._get_immutable_id()
        engine_call(f"container {verb} {cid}", lambda d: getattr(d.containers.container(cid), verb)(**params))

    def kill(self, signal: str = "SIGKILL") -> None:  # type: ignore[override]
        self._act("kill", signal=signal)

    def start(self) -> None:  # type: ignore[override]
        self._act("start")

    def stop(self, time: int | None = None) -> None:  # type: ignore[override]
        self._act("stop", t=time)

    def pause(self) -> None:  # type: ignore[override]
        self._act("pause")

    def unpause(self) -> None:  # type: ignore[override]
        self._act("unpause")


class InspectedOnce(EngineContainer):
    """A member as one inspect saw it, however many readers ask (python-on-whales would inspect again for a read
    10 ms later): every kind reads its signs from the same moment."""

    def _needs_reload(self) -> bool:
        return self._inspect_result is None

    def reload(self) -> None:
        if self._inspect_result is None:
            super().reload()
