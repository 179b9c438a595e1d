"""`starter.py stop-all` and `resume-schedules`: the emergency stop, and the way back.

stop-all pauses every chaos schedule first (so nothing new starts while it works), then cancels every running chaos
run on the task queue. Each run undoes its fault in its own `finally`, as on any cancel; stop-all waits until each
has closed and reads its last fault state from the server's record (search attributes and memo, as `list` does), so
the operator knows every fault is undone - or which one is not, with an exit code of its own.

The scheduled firings waiting on those runs are cancelled before the runs: a firing whose run is cancelled under it
fails, and on a pause-on-failure schedule Temporal would then replace stop-all's pause note with its own, so that
`resume-schedules` no longer recognises it. A firing that is cancelled itself passes the cancel on to its run and
ends cancelled, not failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_RESTORED,
    EXIT_PASS,
    connect_client,
    err_console,
    fail,
    has_live_worker,
    let_the_children_finish,
)
from durable_chaos.cli.facts import RunFacts, cancelled_text, run_facts
from durable_chaos.cli.schedule_views import chaos_schedules
from durable_chaos.contracts import SCHEDULED_WORKFLOW_NAME, WORKFLOW_NAME, FaultState
from durable_chaos.hosts import default_host
from durable_chaos.runtime.connect import task_queue

console = Console()
# Every note stop-all pauses a schedule with starts so: it is how resume-schedules tells its pauses from others'.
STOP_ALL_NOTE = "paused by stop-all"
POLL_S = 0.5


def _running_query(workflow_type: str, queue: str) -> str:
    return f'WorkflowType="{workflow_type}" AND ExecutionStatus="Running" AND TaskQueue="{queue}"'


async def _cancel_running(client: Client, workflow_type: str, queue: str,
                          seen: set[tuple[str, str]]) -> list[tuple[WorkflowHandle, RunFacts]]:
    """Cancel each running workflow of the type on the queue that is not in `seen` yet; those just cancelled."""
    cancelled = []
    async for wf in client.list_workflows(_running_query(workflow_type, queue)):
        if (wf.id, wf.run_id) in seen:
            continue
        seen.add((wf.id, wf.run_id))
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        try:
            await handle.cancel()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # it closed between the listing and the cancel
                continue
            raise
        cancelled.append((handle, await run_facts(wf)))
    return cancelled


async def _cancel_all(client: Client, queue: str, seen: set[tuple[str, str]]) -> list[tuple[WorkflowHandle, RunFacts]]:
    """Firings first (see the module's docstring), then the chaos runs, manual and scheduled alike."""
    await _cancel_running(client, SCHEDULED_WORKFLOW_NAME, queue, seen)
    return await _cancel_running(client, WORKFLOW_NAME, queue, seen)


def _undone(f: RunFacts) -> bool:
    return f.fault_state != FaultState.INJECTED.value


def _closed_text(f: RunFacts) -> str:
    if f.status == WorkflowExecutionStatus.CANCELED.name:
        return cancelled_text(f)
    state = {FaultState.RESTORED.value: f"{f.the_fault} was restored",
             FaultState.INJECTED.value: f"{f.the_fault} is still recorded as injected: `python starter.py reap` "
                                        f"restores it"}.get(f.fault_state or "", "nothing had been injected")
    return f"run {f.workflow_id} ended {(f.status or '?').lower()} before the cancel took effect: {state}"


def _stopped_table(cancelled: list[tuple[WorkflowHandle, RunFacts]], queue: str) -> Table:
    table = Table(title=f"cancelled {len(cancelled)} chaos run(s) on task queue {queue!r}", title_justify="left",
                  box=None, header_style="bold", pad_edge=False)
    for column in ("workflow id", "host", "subject", "fault", "fault state", "stage"):
        table.add_column(column, no_wrap=True)
    for _, f in cancelled:
        table.add_row(f.workflow_id, f.host or "-", f.subject or "-", f.fault_on, f.fault_state or "none",
                      f.stage or "-")
    return table


async def _per_host(client: Client, queue: str, closed: list[RunFacts], pending: list[RunFacts]) -> None:
    """One line per Docker host: what was restored there, and for a host whose worker is gone, the faults still
    waiting for it (its runs keep them pending until a worker of that host comes back)."""
    from durable_chaos.cli.hosts import hosts_up  # the fleet's view: only here

    up = set(await hosts_up(client, queue))
    for host in sorted({f.host or "" for f in closed + pending}):
        done = [f for f in closed if (f.host or "") == host]
        waiting = [f for f in pending if (f.host or "") == host]
        restored = [f.fault_on for f in done if f.fault_state == FaultState.RESTORED.value]
        line = (f"{f'host {host}' if host else 'runs naming no host'}: {len(done)} run(s) closed, "
                f"{len(restored)} fault(s) restored"
                + (f" ({'; '.join(restored)})" if restored else ""))
        if waiting:
            reach = "reachable" if host in up else "UNREACHABLE (no worker polling)"
            line += (f"; {reach}, {len(waiting)} fault(s) still pending restore: "
                     + "; ".join(f"{f.workflow_id} ({f.fault_on})" for f in waiting))
        console.print(line, style="bold red" if waiting else None, highlight=False, soft_wrap=True)


async def _pause_schedules(client: Client, queue: str, note: str) -> None:
    async for handle, desc in chaos_schedules(client, queue):
        state = desc.schedule.state
        if state.paused:  # paused by someone (or a failed run) for a reason of theirs: keep it, and its note
            console.print(f"schedule {handle.id}: already paused ({state.note or 'no note'})", highlight=False)
            continue
        await handle.pause(note=note)
        console.print(f"schedule {handle.id}: paused", highlight=False)


async def _wait_closed(client: Client, queue: str, pending: dict[tuple[str, str], WorkflowHandle],
                       seen: set[tuple[str, str]], wait_s: float) -> list[RunFacts]:
    """Poll until every cancelled run has closed or `wait_s` is up, saying each one's outcome as it closes. A run
    started meanwhile (a firing or a manual start that raced the pause) is cancelled and waited for too."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    closed: list[RunFacts] = []
    with err_console.status("") as status:
        while pending:
            for key, handle in list(pending.items()):
                desc = await handle.describe()
                if desc.status != WorkflowExecutionStatus.RUNNING:
                    f = await run_facts(desc)
                    closed.append(f)
                    del pending[key]
                    console.print(_closed_text(f), style=None if _undone(f) else "bold red", highlight=False,
                                  soft_wrap=True)
            for handle, f in await _cancel_all(client, queue, seen):
                console.print(f"also cancelled {f.workflow_id} ({f.subject or '?'}: {f.fault_on}, fault state "
                              f"{f.fault_state or 'none'}), started while stop-all ran", highlight=False)
                pending[(handle.id, handle.run_id or "")] = handle
            left = deadline - loop.time()
            if not pending or left <= 0:
                break
            status.update(f"waiting for {len(pending)} run(s) to restore and close ({left:.0f} s left)")
            await asyncio.sleep(POLL_S)
    return closed


async def _stop_all(reason: str | None, wait_s: float) -> int:
    client = await connect_client()
    queue = task_queue()
    now = datetime.now(timezone.utc)
    note = f"{STOP_ALL_NOTE} at {now:%Y-%m-%d %H:%M:%S} UTC" + (f": {reason}" if reason else "")
    # Schedules first: one firing between the cancels and the pause would start a new run.
    await _pause_schedules(client, queue, note)
    seen: set[tuple[str, str]] = set()
    cancelled = await _cancel_all(client, queue, seen)
    if not cancelled:
        console.print(f"no chaos run is running on task queue {queue!r}: nothing to stop", highlight=False)
        return EXIT_PASS
    console.print(_stopped_table(cancelled, queue))
    err_console.print(f"waiting up to {wait_s:g} s for each to restore its fault and close", highlight=False)
    pending = {(handle.id, handle.run_id or ""): handle for handle, _ in cancelled}
    handles = dict(pending)
    async with contextlib.AsyncExitStack() as stack:
        # The restores run in the runs' own workflow code: without a worker polling, nothing would run them.
        own_worker = not await has_live_worker(client, queue)
        if own_worker:
            err_console.print("[dim]no worker polling the task queue: running one in this process to restore[/]")
            from durable_chaos.runtime.worker import serve  # the worker, only when this process runs one

            await stack.enter_async_context(serve(client, default_host(), task_queue=queue))
        closed = await _wait_closed(client, queue, pending, seen, wait_s)
        handles.update(pending)
        if own_worker:  # the fault guards of the closed runs finish moments later, on this worker
            await asyncio.gather(*(let_the_children_finish(client, handles[(f.workflow_id, f.run_id)]) for f in closed
                                   if (f.workflow_id, f.run_id) in handles))
    still = [await run_facts(await handle.describe()) for handle in pending.values()]
    for f in still:
        waits = f" waiting for a worker on host {f.waiting_for_host}" if f.waiting_for_host else ""
        console.print(f"run {f.workflow_id} still running after {wait_s:g} s (stage {f.stage or '?'}, fault state "
                      f"{f.fault_state or 'none'}{',' if waits else ''}{waits}): `python starter.py status "
                      f"{f.workflow_id}` shows where it is", style="bold red", highlight=False, soft_wrap=True)
    await _per_host(client, queue, closed, still)
    not_undone = len(pending) + sum(not _undone(f) for f in closed)
    if not_undone:
        err_console.print(f"[bold red]{not_undone} of {len(closed) + len(pending)} run(s) did not confirm their fault "
                          f"undone[/]", highlight=False)
        return EXIT_NOT_RESTORED
    console.print(f"stopped {len(closed)} run(s): every fault is undone", style="bold green", highlight=False)
    return EXIT_PASS


def stop_all(
    reason: Optional[str] = typer.Option(None, help="Why: recorded in the note of every schedule it pauses."),
    wait_s: float = typer.Option(60.0, "--wait-s", help="Seconds to wait for the cancelled runs to restore and close."),
) -> None:
    """Emergency stop: pause every chaos schedule, cancel every running chaos run on the task queue, and wait
    until each has undone its fault.

    Covers every Docker host's runs (they share the task queue; each restores on its own host). Prints each
    schedule paused and each run cancelled (host, subject, fault, target), then each run's final fault state, and
    per host what was restored and, for a host with no worker, the faults still pending restore there.
    `resume-schedules` unpauses what it paused. Exit codes: 0 everything stopped and restored (or nothing was
    running), 2 bad input, 3 Temporal unreachable, 4 a run did not confirm its fault undone within --wait-s.
    """
    if not wait_s > 0:
        fail(EXIT_BAD_INPUT, f"--wait-s must be positive (got {wait_s:g})")
    raise typer.Exit(asyncio.run(_stop_all(reason, wait_s)))


async def _resume(every: bool) -> int:
    client = await connect_client()
    queue = task_queue()
    resumed, left = 0, []
    async for handle, desc in chaos_schedules(client, queue):
        state = desc.schedule.state
        if not state.paused:
            continue
        if not every and not (state.note or "").startswith(STOP_ALL_NOTE):
            left.append(f"{handle.id} ({state.note or 'no note'})")
            continue
        await handle.unpause(note="resumed by resume-schedules" + (" --all" if every else ""))
        console.print(f"schedule {handle.id}: resumed (was {state.note or 'paused'})", highlight=False)
        resumed += 1
    if not resumed:
        console.print(f"no chaos schedule on task queue {queue!r} was {'paused' if every else 'paused by stop-all'}",
                      highlight=False)
    if left:
        err_console.print(f"still paused, not by stop-all (--all resumes them too): {', '.join(left)}",
                          highlight=False, soft_wrap=True)
    return EXIT_PASS


def resume_schedules(
    every: bool = typer.Option(False, "--all", help="Unpause every paused chaos schedule, whoever paused it."),
) -> None:
    """Unpause the chaos schedules stop-all paused (recognised by their pause note), or every paused one with --all.

    Exit codes: 0 done (also when nothing was paused), 3 Temporal unreachable.
    """
    raise typer.Exit(asyncio.run(_resume(every)))
