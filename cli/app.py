"""The `starter.py` command line: start chaos runs and follow them.

Exit codes (cli/common.py): 0 pass, 1 verdict fail (or the run failed), 2 bad input, 3 infrastructure unreachable
(Docker or Temporal), 130 interrupted. Every error is one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from datetime import datetime, timedelta, timezone
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from temporalio.api.enums.v1 import PendingWorkflowTaskState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from cli import runs, schedules
from cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    chaos_input,
    connect_client,
    err_console,
    exit_code_for_failure,
    fail,
    run_url,
    say,
)
from cli.render import progress_view, report_view
from contracts import ChaosInput, ChaosReport, Progress
from runtime.connect import exit_process, task_queue
from runtime.worker import build_worker
from subjects import resolve
from workflows.chaos import ChaosDemoWorkflow

# A poller seen this recently may be a live worker (idle workers re-poll at least once a minute)...
WORKER_SEEN_WITHIN = timedelta(seconds=75)
# ...but a worker that died recently is listed too, so it must also take the run's first task within this time.
WORKER_PICKUP_WITHIN = 3.0

app = typer.Typer(
    help="Durable chaos runs on Temporal: kill a node of a real cluster, watch it get detected and diagnosed, "
    "and be certain it comes back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Durable chaos runs on Temporal. Server: TEMPORAL_ADDRESS / profile, else the embedded dev server."""


async def has_live_worker(client: Client, queue: str) -> bool:
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    now = datetime.now(timezone.utc)
    return any(now - p.last_access_time.ToDatetime(timezone.utc) < WORKER_SEEN_WITHIN for p in resp.pollers)


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


async def _follow(handle: WorkflowHandle, live: Live, url: str) -> ChaosReport:
    """Redraw the progress query until the run closes. The first Ctrl-C cancels the run (restore still runs)."""
    result = asyncio.ensure_future(handle.result())
    cancelled = False

    def on_interrupt() -> None:
        nonlocal cancelled
        if not cancelled:
            cancelled = True
            err_console.print("[yellow]Ctrl-C: cancelling the run; the fault is restored before it ends "
                              "(Ctrl-C again to stop watching)[/]")
            asyncio.ensure_future(handle.cancel())
        else:
            result.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        while not result.done():
            with contextlib.suppress(Exception):  # a query can race the run's end or a worker restart
                progress = await handle.query(ChaosDemoWorkflow.progress, result_type=Progress)
                live.update(progress_view(progress, url))
            await asyncio.wait([result], timeout=0.25)
        return result.result()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _chaos(inp: ChaosInput, as_json: bool, detach: bool) -> int:
    out = err_console if as_json else Console()
    client = await connect_client(say)
    instance = resolve(inp.subject)
    maybe_worker = await has_live_worker(client, task_queue())
    try:
        handle = await client.start_workflow(
            ChaosDemoWorkflow.run,
            inp,
            # The workflow id is the subject instance: Temporal itself refuses a second run on a busy subject.
            id=instance.project,
            task_queue=task_queue(),
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=inp.start_attributes(),
            static_summary=inp.summary(),
        )
    except WorkflowAlreadyStartedError:
        fail(EXIT_BAD_INPUT, f"subject {inp.subject.name} (project {instance.project}) is busy: run "
                             f"{instance.project} is still in progress; wait for it or cancel it")
    url = run_url(client, handle.id, handle.result_run_id or "")
    err_console.print(f"run {handle.id} started: {url}", highlight=False, soft_wrap=True)
    if detach:
        if not maybe_worker:
            err_console.print("[yellow]no worker is polling; start one with `python worker.py` to run it[/]")
        if as_json:
            print(json.dumps({"workflow_id": handle.id, "run_id": handle.result_run_id, "url": url}))
        return EXIT_PASS

    own_worker = not (maybe_worker and await picked_up(handle, WORKER_PICKUP_WITHIN))
    worker = build_worker(client) if own_worker else contextlib.nullcontext()
    if own_worker:
        err_console.print("[dim]no worker polling the task queue: running one in this process for this run[/]")
    try:
        async with worker:
            with Live(progress_view(Progress(subject=inp.subject.name), url), console=out, transient=as_json,
                      refresh_per_second=8) as live:
                report = await _follow(handle, live, url)
    except WorkflowFailureError as err:
        code, message = exit_code_for_failure(err)
        fail(code, message)
    except asyncio.CancelledError:
        fail(EXIT_INTERRUPTED, f"stopped watching; run {handle.id} goes on (see {url})")
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        out.print(report_view(report, url))
    return EXIT_PASS if report.verdict == "pass" else EXIT_FAIL


@app.command()
def chaos(
    subject: str = typer.Option("etcd", help="Subject to break (a folder under subjects/)."),
    target: Optional[str] = typer.Option(None, help="Service to kill; a random member when omitted."),
    detect_timeout: float = typer.Option(30.0, help="Seconds to wait for detection before warning and going on."),
    detect_interval: float = typer.Option(0.5, help="Seconds between invariant checks while detecting."),
    countdown: int = typer.Option(3, help="Seconds of countdown before the fault (a durable timer)."),
    project: Optional[str] = typer.Option(None, help="Compose project of the subject copy (default chaos-<subject>)."),
    port_base: Optional[int] = typer.Option(None, help="First host port of the subject copy (e.g. 23790)."),
    as_json: bool = typer.Option(False, "--json", help="Print only the report as JSON on stdout."),
    detach: bool = typer.Option(False, "--detach", help="Start the run and return; follow it in the web UI."),
) -> None:
    """Run one chaos experiment: preflight, load, countdown, kill, detect, diagnose, restore.

    Exit codes: 0 pass, 1 fail, 2 bad input, 3 Docker or Temporal unreachable.
    """
    inp = chaos_input(subject, target, detect_timeout, detect_interval, countdown, project, port_base)
    raise typer.Exit(asyncio.run(_chaos(inp, as_json, detach)))


# Operations: finding runs, reading their reports, nightly schedules (each in its own module).
app.command("list")(runs.list_runs)
app.command("status")(runs.status)
app.command("report")(runs.report)
app.add_typer(schedules.app, name="schedule")


def main() -> None:
    try:
        app()  # always ends in SystemExit carrying the exit code
    except KeyboardInterrupt:
        exit_process(EXIT_INTERRUPTED)
    except SystemExit as done:
        exit_process(done.code if isinstance(done.code, int) else EXIT_FAIL if done.code else EXIT_PASS)
