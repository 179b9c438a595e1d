"""Starting a run and following it: what `chaos` and `run FILE` share once their input is built."""

from __future__ import annotations


from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from durable_chaos.cli import runs
from durable_chaos.cli.common import (
    EXIT_BAD_INPUT,
    connect_client,
    err_console,
    fail,
    has_live_worker,
    say_detached,
    run_url,
    runs_url,
)
from durable_chaos.cli.follow import follow_to_end
from durable_chaos.cli.hosts import is_local, on_default_host, route
from durable_chaos.cli.subjects import build_images_with_progress
from durable_chaos.contracts import WORKFLOW_TASK_TIMEOUT, ChaosInput, Progress
from durable_chaos.faults import make_fault
from durable_chaos.ids import run_workflow_id
from durable_chaos.runtime.connect import task_queue
from subjects import resolve


async def start_and_follow(inp: ChaosInput, as_json: bool, detach: bool) -> int:
    """Start a run of `inp` (`chaos`, `run FILE`) and follow it live, or return once started (`--detach`)."""
    from workflows.chaos import ChaosDemoWorkflow  # with its activities: imported on use (start-up)
    inp = on_default_host(inp)
    instance = resolve(inp.subject)
    # The subject instance on its host: Temporal itself refuses a second run on a busy subject.
    run_id = run_workflow_id(instance.project, inp.subject.host)
    client = await connect_client()
    # Before anything starts: the host has a worker now and serves this subject (else one line and exit).
    maybe_worker = await route(client, inp.subject)
    if is_local(inp.subject.host):  # another host's worker builds what its preflight needs there
        build_images_with_progress(instance.subject.name, instance.subject.images())
        fault = make_fault(inp.fault, inp.fault_params)  # validated already by chaos_input
        build_images_with_progress(f"fault {fault.kind}", fault.images())
    maybe_worker = maybe_worker and await has_live_worker(client, task_queue())
    try:
        handle = await client.start_workflow(
            ChaosDemoWorkflow.run,
            inp,
            id=run_id,
            task_queue=task_queue(),
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            search_attributes=inp.start_attributes(),
            static_summary=inp.summary(default_project=instance.subject.default_project),
        )
    except WorkflowAlreadyStartedError:
        fail(EXIT_BAD_INPUT, f"subject {inp.subject.name} (project {instance.project}) is busy: run "
                             f"{run_id} is still in progress; wait for it or cancel it")
    url = run_url(client, handle.id, handle.result_run_id or "")
    # Followed live, the URL is on the live view and under the report: not a third time here.
    followed_live = not (as_json or detach)
    err_console.print(f"run {handle.id} started" + ("" if followed_live else f": {url}"), highlight=False,
                      soft_wrap=True)
    # Only chaos runs: the web UI's full list also holds the runs' fault guards and any other workflow.
    err_console.print(f"all chaos runs: {runs_url(client, runs.runs_query(None, None))}", highlight=False,
                      soft_wrap=True)
    if detach:
        return say_detached(handle, url, maybe_worker, as_json)

    return await follow_to_end(client, handle, url, Progress(subject=inp.subject.name), maybe_worker=maybe_worker,
                               as_json=as_json, interactive=inp.interactive)

