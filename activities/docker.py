"""Everything that talks to Docker, through python-on-whales.

python-on-whales shells out to the docker CLI and blocks, so activities call these helpers through
`asyncio.to_thread`: a blocked event loop would make the worker miss heartbeats and queries.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Callable, TypeVar

from python_on_whales import Container, DockerClient, DockerException
from temporalio.exceptions import ApplicationError

from activities.images import ImageBuildFailed, ensure_images
from durable_chaos.contracts import ContainerState, ErrorType, bad_input
from durable_chaos.state import state_dir
from subjects import ExecResult, SubjectInstance
from durable_chaos.images import ImageSpec

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args) -> T:
    """Run a blocking Docker call in a thread (the worker keeps heartbeating meanwhile: runtime/heartbeats.py).

    If the activity is cancelled meanwhile, we still wait for the call to finish before reporting: a kill that lands
    *after* the workflow moved on to restore would leave the node down.
    """
    call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        await asyncio.wait([call])  # neither cancels the call nor raises its error: that is read below
    except asyncio.CancelledError:
        await asyncio.shield(call)
        raise
    try:
        return call.result()
    except DockerException as exc:
        if "Cannot connect to the Docker daemon" in str(exc):
            raise docker_unavailable(exc) from exc
        raise


def docker_unavailable(exc: Exception) -> ApplicationError:
    first_line = (str(exc).strip().splitlines() or ["no answer"])[-1][:300]
    return ApplicationError(
        f"Docker is not reachable: {first_line}", type=ErrorType.DOCKER_UNAVAILABLE, non_retryable=True
    )


def compose_client(instance: SubjectInstance) -> DockerClient:
    env_file = state_dir() / "compose" / f"{instance.project}.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env = instance.subject.compose_variables(instance.port_base)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
    return DockerClient(
        compose_files=[instance.subject.compose_file],
        compose_project_name=instance.project,
        compose_env_files=[env_file],
    )


def ensure_docker(client: DockerClient) -> None:
    try:
        client.system.info()
    except (DockerException, OSError) as exc:
        raise docker_unavailable(exc) from exc


def validate_compose(client: DockerClient, instance: SubjectInstance) -> None:
    try:
        client.compose.config(return_json=True)
    except DockerException as exc:
        detail = (exc.stderr or str(exc)).strip().splitlines()
        raise bad_input(
            f"compose file of subject {instance.subject.name!r} is broken: {detail[-1] if detail else exc}") from exc


def ensure_image(instance: SubjectInstance, progress: Callable[[str], None] = lambda line: None) -> list[str]:
    """Build the subject's missing images locally (cached by tag). Returns the tags it built."""
    return ensure_images_or_fail(instance.subject.images(), f"subject {instance.subject.name!r}", progress)


def ensure_images_or_fail(images: list[ImageSpec], whose: str, progress: Callable[[str], None]) -> list[str]:
    try:
        return ensure_images(images, progress)
    except ImageBuildFailed as exc:
        # A recipe that cannot build here will not build on a retry either.
        raise ApplicationError(f"{whose}: {exc}", type=ErrorType.SUBJECT_UNHEALTHY, non_retryable=True) from exc


def bring_up(client: DockerClient) -> None:
    # `up -d` is idempotent: running members are left alone, missing or stopped ones are (re)started.
    client.compose.up(detach=True, quiet=True)


def project_containers(client: DockerClient, instance: SubjectInstance) -> dict[str, Container]:
    """service -> container of one instance, stopped ones included. By compose's labels through the plain docker
    CLI: `docker compose ps` parses the whole project first and takes ~10x longer, which sits directly in
    time-to-restore."""
    found = client.container.list(all=True, filters=[("label", f"com.docker.compose.project={instance.project}")])
    return {c.config.labels.get("com.docker.compose.service"): c for c in found}


def service_container(client: DockerClient, instance: SubjectInstance, service: str) -> Container:
    found = project_containers(client, instance).get(service)
    if found is None:
        raise ApplicationError(
            f"no container for service {service!r} in project {instance.project!r}",
            type=ErrorType.CONTAINER_GONE,
            non_retryable=True,
        )
    return found


def all_running(client: DockerClient, instance: SubjectInstance) -> bool:
    running = {c.name for c in client.compose.ps() if c.state.running}
    return len(running) >= len(instance.subject.services)


def container_states(client: DockerClient, instance: SubjectInstance) -> list[ContainerState]:
    by_service = project_containers(client, instance)
    states = []
    for service in instance.subject.services:
        c = by_service.get(service)
        if c is None:
            states.append(ContainerState(service=service, container="", running=False, status="missing"))
            continue
        s = c.state
        states.append(
            ContainerState(
                service=service,
                container=c.name,
                running=bool(s.running),
                status=s.status or "unknown",
                exit_code=s.exit_code,
                oom_killed=bool(s.oom_killed),
                restart_count=c.restart_count or 0,
            )
        )
    return states


LOG_TAIL_LINES = 2000  # a chatty member must not make `docker logs` return megabytes


def service_logs(client: DockerClient, instance: SubjectInstance, since: datetime) -> dict[str, str]:
    """stdout+stderr of every member since `since`, each line prefixed with the daemon's timestamp (dead
    containers included: their last words matter most)."""
    by_service = project_containers(client, instance)
    return {
        service: client.container.logs(by_service[service], since=since, tail=LOG_TAIL_LINES, timestamps=True)
        if service in by_service else ""
        for service in instance.subject.services
    }


class DockerMembers:
    """`subjects.Members` for sessions that run a command inside a member (`docker exec`).

    An asyncio subprocess rather than python-on-whales: a probe must not tie up a thread for as long as a hung
    command runs, and it must be killable at its timeout."""

    def __init__(self, instance: SubjectInstance):
        self.instance = instance
        self._containers: dict[str, str] = {}

    async def _container(self, service: str) -> str:
        """The member's container id, looked up once per session; "" while it has none."""
        if service not in self._containers:
            try:
                found = await asyncio.to_thread(service_container, DockerClient(), self.instance, service)
            except ApplicationError:  # no container (yet): the probe fails, a later one looks again
                return ""
            self._containers[service] = found.id
        return self._containers[service]

    async def exec(self, service: str, argv: list[str], timeout: float) -> ExecResult:
        container = await self._container(service)
        if not container:
            return ExecResult(exit_code=-1, output=f"no container for service {service}")
        proc = await asyncio.create_subprocess_exec("docker", "exec", container, *argv,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return ExecResult(exit_code=-1, output=f"no answer within {timeout:g}s (timeout)")
        return ExecResult(exit_code=proc.returncode, output=out.decode(errors="replace"))


def open_session(instance: SubjectInstance):
    """The subject's own session on a running instance (an async context manager)."""
    return instance.subject.session(instance, DockerMembers(instance))
