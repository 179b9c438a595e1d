"""A fleet of Docker hosts on one Temporal server: each host's worker registers it, the CLI finds the hosts that
are up, and the fleet view lists them.

A host is a task queue (`durable_chaos.ids.host_queue`): the server routes each activity that touches a subject to
a worker of the subject's host, and nothing home-made stands between. What Temporal does not keep by itself is
which engine a host name stands for; the host's record does (workflows/host.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos.contracts import (
    HOST_WORKFLOW_NAME,
    WORKFLOW_NAME,
    Admission,
    Attr,
    HostRecord,
    WorkerSeen,
)
from durable_chaos.ids import host_queue, host_record_id

# A poller seen this recently may be a live worker: an idle worker's long poll is renewed at least once a minute.
WORKER_SEEN_WITHIN = timedelta(seconds=75)
# Statuses of a moment that a describe is asked again after, and how many times in all.
PASSING_STATUSES = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE)
DESCRIBE_ATTEMPTS = 4


class EngineChanged(Exception):
    """The host name was first seen with another Docker engine: two machines must not share a name."""


def docker_endpoint() -> str:
    """The engine this process talks to: DOCKER_HOST, else the current Docker context's (which it then exports, so
    the Engine API client, which knows no contexts, talks to the same engine as the CLI and compose)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        out = subprocess.run(["docker", "context", "inspect"], capture_output=True, text=True, timeout=10)
        endpoint = json.loads(out.stdout)[0]["Endpoints"]["docker"]["Host"]
    except (OSError, subprocess.SubprocessError, ValueError, LookupError, TypeError):
        return "unix:///var/run/docker.sock"
    if endpoint and endpoint != "unix:///var/run/docker.sock":
        os.environ["DOCKER_HOST"] = endpoint
    return endpoint or "unix:///var/run/docker.sock"


async def engine_identity() -> tuple[str, str]:
    """(ID, version) of the engine DOCKER_HOST names: the ID is the engine's own, kept in its data root."""
    from durable_chaos import docker_engine  # aiodocker: only a worker's start asks the engine

    async with docker_engine.connect() as docker:
        info = await docker.system.info()
    return info["ID"], info.get("ServerVersion", "?")


async def host_memo(client: Client, queue: str, host: str) -> dict | None:
    """The running record's memo of `host`, None if the host was never seen (or was forgotten)."""
    handle = client.get_workflow_handle(host_record_id(queue, host))
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return None
    return dict(await desc.memo())


async def register(client: Client, queue: str, seen: WorkerSeen) -> bool:
    """Record that `seen` serves its host; True if the host is new. EngineChanged if the host was first seen with
    another engine (nothing is written then)."""
    memo = await host_memo(client, queue, seen.host)
    if memo is not None and memo.get("engine_id") != seen.engine_id:
        raise EngineChanged(
            f"host {seen.host!r} was first seen with Docker engine {memo.get('engine_id')} (since "
            f"{memo.get('first_seen')}); this worker's engine ({seen.docker_host}) is {seen.engine_id}: refusing to "
            f"serve it under that name (another machine? name it differently, or `python starter.py workers --forget "
            f"{seen.host}` if the host was rebuilt)")
    from workflows.host import ChaosHostWorkflow  # the workflow module: only where a host is registered

    record = HostRecord(host=seen.host, engine_id=seen.engine_id, first_seen=seen.started_at)
    await client.start_workflow(
        ChaosHostWorkflow.run, record, id=host_record_id(queue, seen.host), task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        memo={"host": seen.host, "engine_id": seen.engine_id, "first_seen": seen.started_at.isoformat()},
        static_summary=f"Docker host {seen.host} (engine {seen.engine_id[:12]})",
        start_signal="worker_started", start_signal_args=[seen],
    )
    return memo is None


@dataclass
class Poller:
    identity: str
    last_seen: datetime


async def pollers(client: Client, queue: str,
                  kind: TaskQueueType.ValueType = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY) -> list[Poller]:
    """Workers polling `queue` for activities (or `kind`), seen within WORKER_SEEN_WITHIN."""
    req = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind)
    for attempt in range(DESCRIBE_ATTEMPTS):
        try:
            resp = await client.workflow_service.describe_task_queue(req, retry=True)
            break
        except RPCError as err:
            # A busy server answers this read "operation was canceled" now and then (seen in CI with 20 runs on 2
            # cores), and the SDK retries neither that nor a deadline. It is a read: asking again is harmless.
            if err.status not in PASSING_STATUSES or attempt == DESCRIBE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    now = datetime.now(timezone.utc)
    seen = [Poller(p.identity, p.last_access_time.ToDatetime(timezone.utc)) for p in resp.pollers]
    return [p for p in seen if now - p.last_seen < WORKER_SEEN_WITHIN]


@dataclass
class RunOnHost:
    workflow_id: str
    subject: str
    stage: str
    fault_state: str


@dataclass
class HostView:
    host: str
    engine_id: str
    engine_version: str
    first_seen: str
    workers: list[Poller]
    latest_worker: WorkerSeen | None
    runs: list[RunOnHost] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return bool(self.workers)

    @property
    def last_seen(self) -> datetime | None:
        return max((p.last_seen for p in self.workers), default=None)

    @property
    def admission(self) -> Admission | None:
        return self.latest_worker.admission if self.latest_worker else None


async def known_hosts(client: Client, queue: str) -> list[str]:
    """Every host with a running record on `queue`'s fleet, by name."""
    query = f'WorkflowType="{HOST_WORKFLOW_NAME}" AND TaskQueue="{queue}" AND ExecutionStatus="Running"'
    names = []
    async for wf in client.list_workflows(query):
        prefix = host_record_id(queue, "")
        if wf.id.startswith(prefix):
            names.append(wf.id[len(prefix):])
    return sorted(set(names))


async def host_view(client: Client, queue: str, host: str, with_runs: bool = True) -> HostView | None:
    memo = await host_memo(client, queue, host)
    if memo is None:
        return None
    latest = memo.get("latest_worker")
    view = HostView(host=host, engine_id=memo.get("engine_id", "?"),
                    engine_version=(latest or {}).get("engine_version", "?"), first_seen=memo.get("first_seen", "?"),
                    workers=await pollers(client, host_queue(queue, host)),
                    latest_worker=WorkerSeen.model_validate(latest) if latest else None)
    if with_runs:
        view.runs = await runs_on(client, queue, host)
    return view


async def runs_on(client: Client, queue: str, host: str) -> list[RunOnHost]:
    query = (f'WorkflowType="{WORKFLOW_NAME}" AND TaskQueue="{queue}" AND ExecutionStatus="Running" AND '
             f'{Attr.HOST.name}="{host}"')
    out = []
    async for wf in client.list_workflows(query):
        attrs = wf.typed_search_attributes
        out.append(RunOnHost(workflow_id=wf.id, subject=attrs.get(Attr.SUBJECT) or "?",
                             stage=attrs.get(Attr.STAGE) or "?", fault_state=attrs.get(Attr.FAULT_STATE) or "none"))
    return out


async def fleet(client: Client, queue: str) -> list[HostView]:
    views = await asyncio.gather(*(host_view(client, queue, h) for h in await known_hosts(client, queue)))
    return [v for v in views if v is not None]
