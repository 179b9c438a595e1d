"""Following a run live: redraw its `progress` query, and in interactive mode pace it with Enter."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading

from rich.console import Console
from rich.live import Live
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from cli.common import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    err_console,
    exit_code_for_failure,
    fail,
    query_progress,
    worker_if_needed,
)
from cli.render import progress_view, report_view
from contracts import ChaosReport, Progress
from workflows.chaos import ChaosDemoWorkflow


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    """Lines typed on stdin, read by a daemon thread (a blocking read must never stall the event loop)."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip().lower())

    threading.Thread(target=read, daemon=True).start()
    return queue


async def follow_to_end(client: Client, handle: WorkflowHandle, url: str, first: Progress, *, as_json: bool,
                        maybe_worker: bool | None = None, interactive: bool = False, ctrl_c_cancels: bool = True) -> int:
    """Show the run live until it closes (running a worker here if none picks it up), then its report.

    Returns the exit code: the verdict's, or the failure's. With `as_json` the live view goes to stderr and
    vanishes; stdout gets only the report.
    """
    out = err_console if as_json else Console()
    try:
        async with worker_if_needed(client, handle, maybe_worker):
            with Live(progress_view(first, url), console=out, transient=as_json, refresh_per_second=8) as live:
                report = await follow(handle, live, url, interactive=interactive, ctrl_c_cancels=ctrl_c_cancels)
    except WorkflowFailureError as err:
        code, message = exit_code_for_failure(err)
        fail(code, message)
    except asyncio.CancelledError:
        fail(EXIT_INTERRUPTED, f"stopped watching; run {handle.id} goes on (see {url})")
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        out.print()
        out.print(report_view(report, url))
    return EXIT_PASS if report.verdict == "pass" else EXIT_FAIL


async def follow(handle: WorkflowHandle, live: Live, url: str, interactive: bool = False,
                 ctrl_c_cancels: bool = True) -> ChaosReport:
    """Redraw until the run closes.

    Ctrl-C cancels the run (its restore still runs) — in interactive mode it first asks: cancel or detach.
    A second Ctrl-C stops watching; the run goes on. Without `ctrl_c_cancels` (a watcher that only looks on),
    the first Ctrl-C stops watching. Raises asyncio.CancelledError when we stop watching.
    """
    loop = asyncio.get_running_loop()
    result = asyncio.ensure_future(handle.result())
    lines = _stdin_lines(loop) if interactive else None
    state = {"interrupted": False, "choosing": False, "prompted": None, "released": set()}

    async def _answer(lines: asyncio.Queue[str], progress: Progress | None) -> None:
        """One Enter releases one stage, and only a stage the user has been shown: presses typed ahead of a
        prompt are dropped, so a double Enter can never skip past the kill unseen."""
        if state["choosing"]:
            while not lines.empty():
                line = lines.get_nowait()
                if line.startswith("c"):
                    state["choosing"] = False
                    cancel_run()
                elif line.startswith("d"):
                    result.cancel()
            return
        waiting = progress.waiting_for if progress else None
        if waiting is not None and state["prompted"] != waiting:
            state["prompted"] = waiting
            while not lines.empty():
                lines.get_nowait()
            live.console.print(f"[bold cyan]press Enter to start {waiting.value}[/]")
        elif waiting is not None and waiting not in state["released"] and not lines.empty():
            lines.get_nowait()
            state["released"].add(waiting)
            with contextlib.suppress(Exception):  # another terminal may have advanced it first
                await handle.execute_update(ChaosDemoWorkflow.advance)

    def cancel_run() -> None:
        err_console.print("[yellow]cancelling the run: the fault is restored before it ends "
                          "(Ctrl-C again to stop watching)[/]")
        asyncio.ensure_future(handle.cancel())

    def on_interrupt() -> None:
        if state["interrupted"] or not ctrl_c_cancels:
            result.cancel()
            return
        state["interrupted"] = True
        if interactive:
            state["choosing"] = True
            err_console.print("[yellow]Ctrl-C: type [bold]c[/] + Enter to cancel the run (restores the node), "
                              "[bold]d[/] + Enter to detach (the run goes on)[/]")
        else:
            cancel_run()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        while not result.done():
            progress: Progress | None = None
            with contextlib.suppress(Exception):  # a query can race the run's end or a worker restart
                progress = await query_progress(handle)
                live.update(progress_view(progress, url))
            if lines is not None:
                await _answer(lines, progress)
            await asyncio.wait([result], timeout=0.25)
        if not result.cancelled() and result.exception() is None:
            with contextlib.suppress(Exception):  # the last frame shows the run done, not its last poll
                live.update(progress_view(await asyncio.wait_for(query_progress(handle), 2), url))
        return result.result()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
