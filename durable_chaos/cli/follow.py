"""Following a run live: redraw its `progress` query, and in interactive mode pace it with Enter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from typing import Iterator

from rich.console import Console
from rich.live import Live
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from durable_chaos.cli.common import (
    EXIT_FOR_VERDICT,
    EXIT_INTERRUPTED,
    err_console,
    exit_code_for_failure,
    fail,
    query_progress,
    say_cancelled,
    was_cancelled,
    worker_if_needed,
)
from durable_chaos.cli.render import print_report, progress_view
from durable_chaos.cli.retries import Retrying, retrying
from durable_chaos.contracts import ChaosReport, Progress, Stage, final_report


ENTER = ""
# The view redraws every 0.25 s; what the server is retrying is read every 4th time (a describe costs the server
# more than a query, and a retry's backoff is counted in seconds).
RETRIES_EVERY = 4


def _stdin_keys(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    """Keys pressed in a terminal (one at a time, see `_unechoed_terminal`), or the first letter of each line piped
    in; Enter is ENTER. Read by a daemon thread: a blocking read must never stall the event loop."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    def put(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, text.strip().lower()[:1])

    def read() -> None:
        if sys.stdin.isatty():
            while key := os.read(sys.stdin.fileno(), 1):
                put(key.decode(errors="ignore"))
        else:
            for line in sys.stdin:
                put(line)

    threading.Thread(target=read, daemon=True).start()
    return queue


@contextlib.contextmanager
def _unechoed_terminal() -> Iterator[None]:
    """While the live view is drawn, keys typed in the terminal must not echo: an echoed Enter moves the cursor a
    line down, and every later redraw then leaves the view's old top border behind on the screen. Keys are read one
    at a time meanwhile; the terminal is restored (and what was typed ahead dropped) when the view ends."""
    fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
    # Only a foreground process may change its terminal (a background one would be stopped by SIGTTOU).
    if fd is None or os.tcgetpgrp(fd) != os.getpgrp():
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


async def follow_to_end(client: Client, handle: WorkflowHandle, url: str, first: Progress, *, as_json: bool,
                        maybe_worker: bool | None = None, interactive: bool = False,
                        ctrl_c_cancels: bool = True) -> int:
    """Show the run live until it closes (running a worker here if none picks it up), then its report.

    Returns the exit code: the verdict's, or the failure's. With `as_json` the live view goes to stderr and
    vanishes; stdout gets only the report.
    """
    out = err_console if as_json else Console()
    try:
        async with worker_if_needed(client, handle, maybe_worker):
            # Transient: when the run ends, its live view gives way to the report, which says it all once.
            with _unechoed_terminal(), Live(progress_view(first, url), console=out, transient=True,
                                            refresh_per_second=8) as live:
                report = await follow(handle, live, url, interactive=interactive, ctrl_c_cancels=ctrl_c_cancels)
    except WorkflowFailureError as err:
        if was_cancelled(err):
            return await say_cancelled(handle)
        code, message = exit_code_for_failure(err)
        fail(code, message)
    except asyncio.CancelledError:
        fail(EXIT_INTERRUPTED, f"stopped watching; run {handle.id} goes on (see {url})")
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print_report(out, report, url)
    return EXIT_FOR_VERDICT[report.verdict]


async def follow(handle: WorkflowHandle, live: Live, url: str, interactive: bool = False,
                 ctrl_c_cancels: bool = True) -> ChaosReport:
    """Redraw until the run closes.

    Ctrl-C cancels the run (its restore still runs) — in interactive mode it first asks: cancel or detach.
    A second Ctrl-C stops watching; the run goes on. Without `ctrl_c_cancels` (a watcher that only looks on),
    the first Ctrl-C stops watching. Raises asyncio.CancelledError when we stop watching.
    """
    loop = asyncio.get_running_loop()
    watcher = _Watcher(handle, live, interactive, ctrl_c_cancels)
    keys = _stdin_keys(loop) if interactive else None
    result = watcher.result
    loop.add_signal_handler(signal.SIGINT, watcher.on_interrupt)
    retries: list[Retrying] = []
    polls = 0
    try:
        while not result.done():
            progress: Progress | None = None
            if polls % RETRIES_EVERY == 0:
                with contextlib.suppress(Exception):  # the view goes on without it
                    retries = retrying((await handle.describe()).raw_description.pending_activities)
            with contextlib.suppress(Exception):  # a query can race the run's end or a worker restart
                progress = await query_progress(handle)
                live.update(progress_view(progress, url, retries))
            polls += 1
            if keys is not None:
                await watcher.answer(keys, progress)
            await asyncio.wait([result], timeout=0.25)
        if not result.cancelled() and result.exception() is None:
            with contextlib.suppress(Exception):  # the last frame shows the run done, not its last poll
                live.update(progress_view(await asyncio.wait_for(query_progress(handle), 2), url))
        return result.result()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


class _Watcher:
    """What a key press or a Ctrl-C does to the run being followed."""

    def __init__(self, handle: WorkflowHandle, live: Live, interactive: bool, ctrl_c_cancels: bool) -> None:
        self.handle, self.live, self.interactive, self.ctrl_c_cancels = handle, live, interactive, ctrl_c_cancels
        self.result = asyncio.ensure_future(final_report(handle))
        self.interrupted = self.choosing = False
        self.prompted: Stage | None = None
        self.released: set[Stage] = set()

    async def answer(self, keys: asyncio.Queue[str], progress: Progress | None) -> None:
        """One Enter releases one stage, and only a stage the user has been shown: presses typed ahead of a
        prompt are dropped, so a double Enter can never skip past the kill unseen."""
        from workflows.chaos import ChaosDemoWorkflow  # with its activities: imported on use (start-up)
        if self.choosing:
            while not keys.empty():
                key = keys.get_nowait()
                if key == "c":
                    self.choosing = False
                    self.cancel_run()
                elif key == "d":
                    self.result.cancel()
            return
        waiting = progress.waiting_for if progress else None
        if waiting is not None and self.prompted != waiting:
            self.prompted = waiting
            while not keys.empty():
                keys.get_nowait()
            self.live.console.print(f"[bold cyan]press Enter to start {waiting.value}[/]")
        elif waiting is not None and waiting not in self.released and not keys.empty():
            if keys.get_nowait() != ENTER:
                return
            self.released.add(waiting)
            with contextlib.suppress(Exception):  # another terminal may have advanced it first
                await self.handle.execute_update(ChaosDemoWorkflow.advance)

    def cancel_run(self) -> None:
        self.live.console.print("[yellow]cancelling the run: the fault is restored before it ends "
                                "(Ctrl-C again to stop watching)[/]")
        asyncio.ensure_future(self.handle.cancel())

    def on_interrupt(self) -> None:
        if self.interrupted or not self.ctrl_c_cancels:
            self.result.cancel()
            return
        self.interrupted = True
        if self.interactive:
            self.choosing = True
            self.live.console.print("[yellow]Ctrl-C: press [bold]c[/] to cancel the run (restores the node), "
                                    "[bold]d[/] to detach (the run goes on)[/]")
        else:
            self.cancel_run()
