"""Reads of a subject's containers through the Docker Engine API over its socket (aiodocker), for the paths that
read Docker while a run is under way: which members run, their state for the evidence, their logs, and commands
run inside a member (checks and probes that `docker exec`).

Why not the CLI, as python-on-whales does: every read spawned a `docker` process. Counted with a PATH shim on one
pause run of etcd: 85 `docker` processes, 45 of them `container inspect` (a lookup of the project's containers
was a `container list` and two inspects per member). With 20 copies on one host their CPU came close to the
worker's own (issue 25's sweep). Compose and image builds stay on python-on-whales (activities/docker.py): the
Engine API has no compose, and a build is rare. Fault kinds act through python-on-whales' Container, whose inspect
and kill/start/stop/pause/unpause go over the socket too (durable_chaos/docker_engine.py).

`DOCKER_HOST` names the engine, as for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone

import aiodocker

from durable_chaos.contracts import ContainerState
from durable_chaos.docker_engine import PROJECT_LABEL, SERVICE_LABEL, connect, engine_call, remember_version
from subjects import ExecResult, SubjectInstance


@dataclass(frozen=True)
class Member:
    """One member's container as the Engine lists it."""
    service: str
    id: str
    name: str
    state: str  # Docker's: running, paused, exited, created, restarting, dead
    addresses: tuple[str, ...] = ()  # its IP addresses on the project's networks


async def members(docker: aiodocker.Docker, instance: SubjectInstance) -> dict[str, Member]:
    """service -> container of one instance, stopped ones included: one request, by compose's labels."""
    found = await docker.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={instance.project}"]})
    remember_version(docker)  # every later connection skips asking for it
    out = {}
    for c in found:
        labels = c["Labels"] or {}
        if (service := labels.get(SERVICE_LABEL)) is not None:
            networks = ((c["NetworkSettings"] or {}).get("Networks") or {}).values()
            addresses = tuple(n["IPAddress"] for n in networks if n.get("IPAddress"))
            out[service] = Member(service=service, id=c.id, name=(c["Names"] or ["/"])[0].lstrip("/"),
                                  state=c["State"], addresses=addresses)
    return out


def members_from_thread(instance: SubjectInstance) -> dict[str, Member]:
    """`members` for code running in a thread (fault kinds act through blocking calls): the same one request."""
    return engine_call("container list", lambda docker: members(docker, instance))


async def all_running(instance: SubjectInstance) -> bool:
    async with connect() as docker:
        found = await members(docker, instance)
    return sum(m.state == "running" for m in found.values()) >= len(instance.subject.services)


def started_at(stamp: str | None) -> datetime | None:
    """The engine's StartedAt (RFC 3339 with nanoseconds; the zero time for a container never started)."""
    if not stamp or stamp.startswith("0001-"):
        return None
    head, _, rest = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(rest + '000000')[:6]}" if rest else head).replace(tzinfo=timezone.utc)


async def container_states(instance: SubjectInstance) -> list[ContainerState]:
    """Every member's state, in the subject's order (a member with no container is `missing`)."""
    async with connect() as docker:
        found = await members(docker, instance)
        shown = await asyncio.gather(*(docker.containers.container(m.id).show() for m in found.values()))
    by_service = {m.service: info for m, info in zip(found.values(), shown)}
    states = []
    for service in instance.subject.services:
        info = by_service.get(service)
        if info is None:
            states.append(ContainerState(service=service, container="", running=False, status="missing"))
            continue
        s = info["State"]
        states.append(ContainerState(service=service, container=info["Name"].lstrip("/"), running=bool(s["Running"]),
                                     status=s.get("Status") or "unknown", exit_code=s.get("ExitCode"),
                                     oom_killed=bool(s.get("OOMKilled")), restart_count=info.get("RestartCount") or 0,
                                     started_at=started_at(s.get("StartedAt"))))
    return states


LOG_TAIL_LINES = 2000  # a chatty member must not make a log read return megabytes


async def service_logs(instance: SubjectInstance, since_epoch: float) -> dict[str, str]:
    """stdout+stderr of every member since `since_epoch`, each line prefixed with the daemon's timestamp (dead
    containers included: their last words matter most)."""
    async with connect() as docker:
        found = await members(docker, instance)

        async def logs(m: Member) -> str:
            lines = await docker.containers.container(m.id).log(stdout=True, stderr=True, timestamps=True,
                                                                since=int(since_epoch), tail=LOG_TAIL_LINES)
            return "".join(lines)

        texts = await asyncio.gather(*(logs(found[s]) for s in instance.subject.services if s in found))
    by_service = dict(zip([s for s in instance.subject.services if s in found], texts))
    return {service: by_service.get(service, "") for service in instance.subject.services}


async def exec_in(docker: aiodocker.Docker, container_id: str, argv: list[str], timeout: float) -> ExecResult:
    """A command run in a member, its output (stdout and stderr together) and exit code. At the deadline the
    answer is given up; the command itself runs on in the member, as it would after a killed `docker exec`."""
    try:
        async with asyncio.timeout(timeout):
            run = await docker.containers.container(container_id).exec(argv, stdout=True, stderr=True)
            chunks = []
            async with run.start(detach=False) as stream:
                while (message := await stream.read_out()) is not None:
                    chunks.append(message.data)
            code = (await run.inspect()).get("ExitCode")
    except TimeoutError:
        return ExecResult(exit_code=-1, output=f"no answer within {timeout:g}s (timeout)")
    except aiodocker.DockerError as exc:  # no such container, or it is not running
        return ExecResult(exit_code=-1, output=exc.message)
    return ExecResult(exit_code=-1 if code is None else code, output=b"".join(chunks).decode(errors="replace"))


class EngineMembers:
    """`subjects.Members` for sessions that run a command inside a member, over one Engine API connection for the
    session. A member's container is looked up once per session; one that has none yet is looked up again."""

    def __init__(self, instance: SubjectInstance):
        self.instance = instance
        self._containers: dict[str, str] = {}
        self._docker: aiodocker.Docker | None = None

    async def exec(self, service: str, argv: list[str], timeout: float) -> ExecResult:
        if self._docker is None:
            self._docker = connect()
        if service not in self._containers:
            found = (await members(self._docker, self.instance)).get(service)
            if found is None:
                return ExecResult(exit_code=-1, output=f"no container for service {service}")
            self._containers[service] = found.id
        return await exec_in(self._docker, self._containers[service], argv, timeout)

    async def close(self) -> None:
        if self._docker is not None:
            with contextlib.suppress(Exception):
                await self._docker.close()
            self._docker = None
