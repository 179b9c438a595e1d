"""What every starter command shares: exit codes, one-line errors, connecting, a worker when none polls."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator
from urllib.parse import urlencode

from temporalio.api.enums.v1 import PendingWorkflowTaskState, TaskQueueType
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.service import RPCError, RPCStatusCode

# The exit codes and `fail` live in errors.py (light to import); every command imports them from here as before.
from durable_chaos.cli.errors import (
    EXIT_BAD_INPUT as EXIT_BAD_INPUT,
    EXIT_FAIL as EXIT_FAIL,
    EXIT_FOLDER_NOT_ON_HOST as EXIT_FOLDER_NOT_ON_HOST,
    EXIT_INFRA as EXIT_INFRA,
    EXIT_INTERRUPTED as EXIT_INTERRUPTED,
    EXIT_PASS as EXIT_PASS,
    EXIT_SUBJECT_NOT_ALLOWED as EXIT_SUBJECT_NOT_ALLOWED,
    err_console as err_console,
    fail as fail,
)
from durable_chaos.cli.facts import cancelled_text, run_facts
from durable_chaos.cli.guards import guard_ids, guard_states
from durable_chaos.contracts import WORKFLOW_NAME, ErrorType, Progress
from durable_chaos.hosts import default_host
from durable_chaos.ids import notify_id, run_workflow_id
from durable_chaos.runtime.connect import connect_config, task_queue, ui_base_url
from durable_chaos.runtime.devserver import ServerUnreachable, connect_or_start
from durable_chaos.runtime.fleet import pollers
from durable_chaos.runtime.server_setup import SearchAttributesMissing, ensure_search_attributes, retire_reaper_schedule
from durable_chaos.state import state_dir
from subjects import BadSubjectFile, UnknownSubject, get_subject

# stop-all: a cancelled run did not confirm its fault undone (still running, or closed still marked injected).
EXIT_NOT_RESTORED = 4
# A fault never took effect: the run says nothing about it (neither a pass nor a failure of the system).
EXIT_INCONCLUSIVE = 5
EXIT_FOR_VERDICT = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}
EXIT_FOR_ERROR = {
    ErrorType.BAD_INPUT: EXIT_BAD_INPUT,
    ErrorType.DOCKER_UNAVAILABLE: EXIT_INFRA,
    ErrorType.SUBJECT_UNHEALTHY: EXIT_INFRA,
    ErrorType.FOLDER_NOT_ON_HOST: EXIT_FOLDER_NOT_ON_HOST,
    ErrorType.SUBJECT_NOT_ALLOWED: EXIT_SUBJECT_NOT_ALLOWED,
}
# A poller seen within fleet.WORKER_SEEN_WITHIN may be a live worker, but a worker that died recently is listed too,
# so it must also take the run's first task within this time.
WORKER_PICKUP_WITHIN = 3.0
# The log of a worker this command runs in its own process (runtime/log_file.py), in the state directory.
WORKER_LOG = "worker.log"
# A live worker answers a query in milliseconds; this bounds the wait for one that has just died.
QUERY_TIMEOUT = timedelta(seconds=5)
# A guard restoring what a terminated run left takes a restore and a health wait; longer, the next worker finishes it.
GUARD_FINISH_WITHIN = 90.0
# A run's notifications post within moments (three attempts fit); the retries for a receiver that is down are left
# to the next worker rather than holding the report this long.
NOTIFY_FINISH_WITHIN = 5.0

def run_url(client: Client, workflow_id: str, run_id: str) -> str:
    base = ui_base_url(connect_config()["target_host"])
    return f"{base}/namespaces/{client.namespace}/workflows/{workflow_id}/{run_id}/history"


def runs_url(client: Client, query: str) -> str:
    """The web UI's workflow list filtered by a visibility query, form-encoded as the UI itself writes it."""
    base = ui_base_url(connect_config()["target_host"])
    return f"{base}/namespaces/{client.namespace}/workflows?{urlencode({'query': query})}"


def exit_code_for_failure(err: BaseException) -> tuple[int, str]:
    """Walk the failure chain to the ApplicationError that says what went wrong."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type in EXIT_FOR_ERROR:
            return EXIT_FOR_ERROR[cause.type], cause.message
        if isinstance(cause, CancelledError):
            return EXIT_INTERRUPTED, "the run was cancelled (the fault, if injected, was restored)"
        if isinstance(cause, TerminatedError):  # none of its code ran after: its restore is its guard's to do
            return EXIT_FAIL, f"the run was terminated ({cause.message}), so its own restore did not run"
        cause = cause.__cause__
    return EXIT_FAIL, f"the run failed: {err.__cause__ or err}"


def was_cancelled(err: BaseException) -> bool:
    return exit_code_for_failure(err)[0] == EXIT_INTERRUPTED


async def say_cancelled(handle: WorkflowHandle) -> int:
    """Say what the cancelled run did to the subject (from the server's record of it); the exit code for it."""
    err_console.print(cancelled_text(await run_facts(await handle.describe())), highlight=False, soft_wrap=True)
    return EXIT_INTERRUPTED


async def connect_client() -> Client:
    """Connect (starting the embedded dev server if that is the default), register what runs need, or exit 3."""
    try:
        client = await connect_or_start(say=lambda msg: err_console.print(f"[dim]{msg}[/]"))
        await ensure_search_attributes(client)
        await retire_reaper_schedule(client)
        return client
    except (ServerUnreachable, SearchAttributesMissing) as err:
        fail(EXIT_INFRA, str(err))


async def has_live_worker(client: Client, queue: str) -> bool:
    """A worker polls `queue` for workflow tasks (as far as the server can tell: see fleet.WORKER_SEEN_WITHIN)."""
    return bool(await pollers(client, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))


async def picked_up(handle: WorkflowHandle, within: float) -> bool:
    """True once a worker has started the run's first workflow task."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        raw = (await handle.describe()).raw_description
        if raw.workflow_execution_info.history_length > 2 or raw.pending_workflow_task.state == (
            PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED
        ):
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def worker_if_needed(client: Client, handle: WorkflowHandle,
                           maybe_worker: bool | None = None) -> AsyncIterator[bool]:
    """Run a worker in this process for the run unless a live one picks it up. Yields whether we run one.

    `maybe_worker`: whether a poller was seen on the task queue; asked here when the caller has not asked already.
    """
    if maybe_worker is None:
        maybe_worker = await has_live_worker(client, task_queue())
    own = not (maybe_worker and await picked_up(handle, WORKER_PICKUP_WITHIN))
    if not own:
        yield False
        return
    from durable_chaos.runtime.log_file import worker_log_to
    from durable_chaos.runtime.worker import serve  # the worker, only when this process runs one

    with worker_log_to(state_dir() / WORKER_LOG) as log:
        err_console.print(f"[dim]no worker polling the task queue: running one in this process for this run "
                          f"(its log: {log})[/]", highlight=False, soft_wrap=True)
        async with serve(client, default_host()):  # this machine's host: a run on another host was refused before
            try:
                yield True
            finally:
                await let_the_children_finish(client, handle)


async def let_the_children_finish(client: Client, handle: WorkflowHandle) -> None:
    """A closed run's fault guard finishes moments later (restoring first if the run was terminated), its
    notifications too. Give them this worker until then, rather than leave them open in the web UI (and the webhook
    uninformed) until the next worker comes along."""
    desc = await handle.describe()
    if desc.status == WorkflowExecutionStatus.RUNNING:  # we only stopped watching: its guard keeps watching
        return

    async def finish(workflow_id: str, within: float) -> bool:
        """False if it is still running; no such child (nothing injected, nobody to notify) or a failed one
        is done."""
        with contextlib.suppress(RPCError, WorkflowFailureError):
            try:
                await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), within)
            except asyncio.TimeoutError:
                return False
        return True

    # A run that closed without running its own code (terminated, timed out) left its faults to its guards, whose
    # restore can take a minute: say what this waits for, and afterwards what each guard did.
    left_to_guards = desc.status in (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT)
    if not left_to_guards:
        guards = await guard_ids(client, handle.id, desc.run_id)
    else:
        states = await guard_states(client, handle.id, desc.run_id)
        guards = [state.workflow_id for state in states]
    if left_to_guards and guards:
        what = ", ".join(state.target or "its fault" for state in states)
        err_console.print(f"the run was {desc.status.name.lower()}: waiting up to {GUARD_FINISH_WITHIN:.0f} s for "
                          f"its fault guard to undo whatever it left of {what} (Ctrl-C leaves that to the next worker, "
                          f"python worker.py)", highlight=False, soft_wrap=True)
    notifier = notify_id(handle.id, desc.run_id)
    *done, notified = await asyncio.gather(*(finish(g, GUARD_FINISH_WITHIN) for g in guards),
                                           finish(notifier, NOTIFY_FINISH_WITHIN))
    if left_to_guards and guards:
        now = datetime.now(timezone.utc)
        for state in await guard_states(client, handle.id, desc.run_id):
            err_console.print(state.text(now), highlight=False, soft_wrap=True)
        if not all(done):
            err_console.print(f"[yellow]`python starter.py status {handle.id}` follows the guard; the next worker "
                              f"(python worker.py) goes on with it[/]", highlight=False, soft_wrap=True)
    if not notified:
        err_console.print(f"[yellow]the run's notification is not delivered yet: {notifier} retries it on the next "
                          f"worker (python worker.py)[/]", highlight=False, soft_wrap=True)


def load_subject(subject: str):
    """The subject a user named (a name or a folder path), or exit 2 with one line saying why not."""
    try:
        return get_subject(subject)
    except (UnknownSubject, BadSubjectFile) as err:
        fail(EXIT_BAD_INPUT, str(err))


async def query_progress(handle: WorkflowHandle) -> Progress:
    """The run's `progress` query: what the live view and `status` draw. Bounded: a worker that died moments ago
    is still listed as a poller, and the server would hold the query for it for half a minute."""
    from workflows.chaos import ChaosDemoWorkflow  # with its activities: imported on use (start-up)
    return await handle.query(ChaosDemoWorkflow.progress, result_type=Progress, rpc_timeout=QUERY_TIMEOUT)


async def live_progress(client: Client, handle: WorkflowHandle, desc: WorkflowExecutionDescription) -> Progress | None:
    """The running run's progress, or None when no worker serves it (then only the server's facts are known)."""
    if not await has_live_worker(client, desc.task_queue):
        return None
    try:
        return await query_progress(handle)
    except RPCError:
        return None


def no_worker_hint(workflow_id: str) -> str:
    return (f"no worker is serving run {workflow_id}: start one with `python worker.py`, or "
            f"`python starter.py watch {workflow_id}` runs one while it watches")


async def lookup_run(client: Client, workflow_id: str,
                     run_id: str | None) -> tuple[WorkflowHandle, WorkflowExecutionDescription]:
    """The run (latest of the id unless run_id is given), checked to be a chaos run, and its description."""
    from workflows.chaos import ChaosDemoWorkflow  # with its activities: imported on use (start-up)
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and "@" not in workflow_id:
            # A run's id is its subject copy on its host (PROJECT@HOST): the bare project names this machine's.
            return await lookup_run(client, run_workflow_id(workflow_id, default_host()), run_id)
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            fail(EXIT_BAD_INPUT, f"no run {workflow_id}{f' / {run_id}' if run_id else ''} in namespace "
                                 f"{client.namespace}")
        raise
    if desc.workflow_type != WORKFLOW_NAME:
        fail(EXIT_BAD_INPUT, f"{workflow_id} is a {desc.workflow_type}, not a chaos run")
    # Pin the run: "latest" must not move between the describe and the result.
    return client.get_workflow_handle_for(ChaosDemoWorkflow.run, workflow_id, run_id=desc.run_id), desc


async def running_run(client: Client, workflow_id: str) -> tuple[WorkflowHandle, WorkflowExecutionDescription]:
    """The latest run of the id, which must still be running: for the commands that steer or follow one."""
    handle, desc = await lookup_run(client, workflow_id, None)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        fail(EXIT_BAD_INPUT, f"run {workflow_id} is not running ({desc.status.name if desc.status else '?'}); "
                             f"`status {workflow_id}` shows how it ended")
    return handle, desc


def say_detached(handle, url: str, maybe_worker: bool, as_json: bool) -> int:
    """`--detach` (a run, a campaign): say how to get a worker if none polls, and the ids as JSON if asked."""
    if not maybe_worker:
        err_console.print(no_worker_hint(handle.id), style="yellow", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"workflow_id": handle.id, "run_id": handle.result_run_id, "url": url}))
    return EXIT_PASS
