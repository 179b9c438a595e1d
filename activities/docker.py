"""Compose, images and the containers fault kinds act on, through python-on-whales; what is read while a run is
under way goes through the Engine API instead (activities/engine.py).

python-on-whales shells out to the docker CLI and blocks, so activities call these helpers through
`asyncio.to_thread`: a blocked event loop would make the worker miss heartbeats and queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Callable, TypeVar

from python_on_whales import Container, DockerClient, DockerException
from temporalio.exceptions import ApplicationError

from activities.engine import EngineMembers, Member, members_from_thread
from activities.images import ImageBuildFailed, ensure_images
from durable_chaos.contracts import ErrorType, bad_input
from durable_chaos.docker_engine import EngineContainer, engine_call
from durable_chaos.faults.powerfs import layers_ready, on_layers, override_file, put_on_layers, remove_layers
from durable_chaos.state import state_dir
from subjects import SubjectInstance
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
    # While a storage fault's run has the members' data on power-loss layers, their binds come from a file of ours.
    layers = override_file(instance.project)
    return DockerClient(
        compose_files=[instance.subject.compose_file, *([layers] if layers.exists() else [])],
        compose_project_name=instance.project,
        compose_env_files=[env_file],
    )


def ensure_docker() -> None:
    try:
        engine_call("system info", lambda d: d.system.info())
    except DockerException as exc:
        raise docker_unavailable(exc) from exc


def _validated_marker(instance: SubjectInstance) -> Path:
    """Where a compose file found valid is remembered, named by what `compose config` reads: each file of the
    subject's folder as it is now (path, size, mtime) and the variables. `compose config` took 1.6 s of wall time
    in every run's preflight (20 copies: 20 at once), for a file that had not changed; an edited one is validated
    again."""
    folder = Path(instance.subject.compose_file).parent
    files = sorted((str(f), st.st_size, st.st_mtime_ns) for f in folder.iterdir() if f.is_file() and (st := f.stat()))
    inputs = repr((files, sorted(instance.subject.compose_variables(instance.port_base).items())))
    return state_dir() / "compose" / "valid" / hashlib.sha256(inputs.encode()).hexdigest()


def validate_compose(client: DockerClient, instance: SubjectInstance) -> None:
    marker = _validated_marker(instance)
    if marker.exists():
        return
    try:
        client.compose.config(return_json=True)
    except DockerException as exc:
        detail = (exc.stderr or str(exc)).strip().splitlines()
        raise bad_input(
            f"compose file of subject {instance.subject.name!r} is broken: {detail[-1] if detail else exc}") from exc
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def ensure_image(instance: SubjectInstance, progress: Callable[[str], None] = lambda line: None) -> list[str]:
    """Build the subject's missing images locally (cached by tag). Returns the tags it built."""
    return ensure_images_or_fail(instance.subject.images(), f"subject {instance.subject.name!r}", progress)


def ensure_images_or_fail(images: list[ImageSpec], whose: str, progress: Callable[[str], None]) -> list[str]:
    try:
        return ensure_images(images, progress)
    except ImageBuildFailed as exc:
        # A recipe that cannot build here will not build on a retry either.
        raise ApplicationError(f"{whose}: {exc}", type=ErrorType.SUBJECT_UNHEALTHY, non_retryable=True) from exc


def storage_for(instance: SubjectInstance, layered: bool) -> bool:
    """The members' data on power-loss layers (a run with a storage fault) or not (any other run), switching if it
    is the other way: the copy is taken down with its data and comes up fresh (`bring_up`). True if it switched.
    Idempotent: a retried preflight finds the switch done (or finishes it)."""
    project, paths = instance.project, instance.subject.data_paths
    if layered == on_layers(project) and (not layered or layers_ready(project, paths)):
        return False
    client = compose_client(instance)
    client.compose.down(volumes=True, remove_orphans=True, quiet=True, timeout=1)
    remove_layers(project)
    if layered:
        services = client.compose.config().services
        put_on_layers(project, paths, {service: services[service].image for service in paths})
    return True


def bring_up(client: DockerClient) -> None:
    # `up -d` is idempotent: running members are left alone, missing or stopped ones are (re)started.
    client.compose.up(detach=True, quiet=True)


def project_members(instance: SubjectInstance) -> dict[str, Member]:
    """service -> container of one instance, stopped ones included, by compose's labels: one Engine API request
    (`docker compose ps` parses the whole project first and takes ~10x longer, which sits in time-to-restore)."""
    try:
        return members_from_thread(instance)
    except DockerException as exc:
        raise docker_unavailable(exc) from exc


def project_containers(client: DockerClient, instance: SubjectInstance) -> dict[str, Container]:
    return handles(client, project_members(instance))


def handles(client: DockerClient, members: dict[str, Member]) -> dict[str, Container]:
    """Members as python-on-whales handles, which fault kinds act through; each inspects its container only when
    asked for what it holds."""
    return {service: EngineContainer(client.client_config, m.id, is_immutable_id=True)
            for service, m in members.items()}


def service_container(client: DockerClient, instance: SubjectInstance, service: str) -> Container:
    found = project_containers(client, instance).get(service)
    if found is None:
        raise ApplicationError(
            f"no container for service {service!r} in project {instance.project!r}",
            type=ErrorType.CONTAINER_GONE,
            non_retryable=True,
        )
    return found


@contextlib.asynccontextmanager
async def open_session(instance: SubjectInstance):
    """The subject's own session on a running instance; its commands in members go through the Engine API."""
    members = EngineMembers(instance)
    try:
        async with instance.subject.session(instance, members) as session:
            yield session
    finally:
        await members.close()
