"""Docker hosts on the command line: which host a run goes to (and whether it may), and `workers`, the fleet view."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos import admission
from durable_chaos.cli.errors import (
    EXIT_FOLDER_NOT_ON_HOST,
    EXIT_INFRA,
    EXIT_PASS,
    EXIT_SUBJECT_NOT_ALLOWED,
    EXIT_UNKNOWN_HOST,
    fail,
)
from durable_chaos.contracts import ChaosInput, ErrorType, SubjectRef
from durable_chaos.hosts import default_host
from durable_chaos.ids import host_queue, host_record_id
from durable_chaos.runtime.connect import task_queue
from durable_chaos.runtime.fleet import HostView, fleet, host_view, known_hosts, pollers

EXIT_FOR_REFUSAL = {ErrorType.FOLDER_NOT_ON_HOST: EXIT_FOLDER_NOT_ON_HOST,
                    ErrorType.SUBJECT_NOT_ALLOWED: EXIT_SUBJECT_NOT_ALLOWED}


def on_default_host(inp: ChaosInput) -> ChaosInput:
    """A run that names no host (an experiment file without `host:`) runs on this machine's."""
    if inp.subject.host is not None:
        return inp
    return inp.model_copy(update={"subject": inp.subject.model_copy(update={"host": default_host()})})


def is_local(host: str | None) -> bool:
    """A run on this machine's own host: this command may run its worker, and builds its images here."""
    return host is None or host == default_host()


async def hosts_up(client: Client, queue: str) -> list[str]:
    names = await known_hosts(client, queue)
    up = await asyncio.gather(*(pollers(client, host_queue(queue, h)) for h in names))
    return [h for h, p in zip(names, up) if p]


async def route(client: Client, subject: SubjectRef) -> bool:
    """Check that `subject`'s host can take the run, before anything starts: a worker of it polls now, and its
    latest worker serves the subject. Returns whether a worker polls; only this machine's own host may have none
    (the command then runs one). Otherwise exit with one line: 6 unknown host, 3 no worker now, 8 a folder the
    host does not serve, 9 a subject it does not allow."""
    host, queue = subject.host, task_queue()
    if host is None:
        return True
    view = await host_view(client, queue, host, with_runs=False)
    if view is None or not view.up:
        if is_local(host):
            return False
        up = await hosts_up(client, queue)
        hint = f"hosts up: {', '.join(up)}" if up else "no host has a worker now"
        if view is None:
            fail(EXIT_UNKNOWN_HOST, f"unknown host {host!r}: no worker has ever served it on task queue {queue!r} "
                                    f"({hint}); start one there: python worker.py --host {host}")
        fail(EXIT_INFRA, f"host {host!r} has no worker polling now ({hint}); start one there: "
                         f"python worker.py --host {host}")
    if view.admission is not None:
        try:
            admission.check(subject, view.admission, host)
        except admission.NotAllowed as err:
            fail(EXIT_FOR_REFUSAL[err.kind], str(err))
    return True


def _ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    return f"{(datetime.now(timezone.utc) - when).total_seconds():.0f} s ago"


def view_json(views: list[HostView]) -> list[dict]:
    return [{"host": v.host, "up": v.up, "engine_id": v.engine_id, "engine_version": v.engine_version,
             "first_seen": v.first_seen, "last_seen": v.last_seen.isoformat() if v.last_seen else None,
             "workers": [{"identity": p.identity, "last_seen": p.last_seen.isoformat()} for p in v.workers],
             "docker_host": v.latest_worker.docker_host if v.latest_worker else None,
             "subjects_allowed": (None if v.admission is None or v.admission.unrestricted
                                  else v.admission.subjects),
             "runs": [{"workflow_id": r.workflow_id, "subject": r.subject, "stage": r.stage,
                       "fault_state": r.fault_state} for r in v.runs]} for v in views]


def render(views: list[HostView], console: Console) -> None:
    if not views:
        console.print(f"no hosts on task queue {task_queue()!r}: start a worker (python worker.py [--host NAME])")
        return
    table = Table(title=f"Docker hosts on task queue {task_queue()!r}", title_justify="left")
    for col in ("host", "workers", "engine", "subjects running", "runs in flight (fault state)", "last seen"):
        table.add_column(col)
    for v in views:
        workers = "\n".join(p.identity for p in v.workers) or "[red]none[/]"
        engine = f"{v.engine_id[:19]}\nDocker {v.engine_version}"
        subjects = ", ".join(sorted({r.subject for r in v.runs})) or "-"
        runs = "\n".join(f"{r.workflow_id} ({r.stage}, {r.fault_state})" for r in v.runs) or "-"
        table.add_row(v.host, workers, engine, subjects, runs, _ago(v.last_seen))
    console.print(table)


async def _forget(client: Client, host: str) -> int:
    try:
        await client.get_workflow_handle(host_record_id(task_queue(), host)).terminate(
            reason="forgotten with `starter.py workers --forget`")
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            fail(EXIT_UNKNOWN_HOST, f"unknown host {host!r}: no record on task queue {task_queue()!r}")
        raise
    print(f"forgot host {host!r}: the next worker started for it records its engine anew")
    return EXIT_PASS


def workers(
    as_json: bool = typer.Option(False, "--json", help="The same view as JSON."),
    forget: str | None = typer.Option(None, "--forget", metavar="HOST",
                                      help="Drop a host's record (a rebuilt host with a new engine, a retired one)."),
) -> None:
    """The fleet: each Docker host, its workers, its engine, the runs in flight there and when it was last seen.

    Exit codes: 0 shown, 3 Temporal unreachable, 6 --forget of an unknown host.
    """
    from durable_chaos.cli.common import connect_client

    async def main() -> int:
        client = await connect_client()
        if forget:
            return await _forget(client, forget)
        views = await fleet(client, task_queue())
        if as_json:
            print(json.dumps(view_json(views), indent=2))
        else:
            render(views, Console())
        return EXIT_PASS

    raise typer.Exit(asyncio.run(main()))
