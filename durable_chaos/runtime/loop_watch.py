"""A watchdog for the worker's event loop.

Heartbeats, activity completions and workflow tasks all leave the worker through its asyncio loop. A loop that does
not run for a second (synchronous work in an async activity, a lock, a page fault storm on a busy host) looks to the
server like a dead worker once the stall outlasts a heartbeat timeout: the activity is retried elsewhere and a load
window is lost. The watch notices the stall from a thread of its own, while it lasts, notes what the loop thread is
executing at that moment, and logs one line when the loop runs again, so the cause is named instead of guessed (the
few frames around it at debug level). A stall that goes on is reported while it lasts, in case it never ends.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from asyncio import AbstractEventLoop

log = logging.getLogger("chaos.worker")
# A stall of half a second risks a heartbeat timeout (1.2 s, with heartbeats sent every 0.4 s): worth knowing.
STALL_S = 0.5
STILL_STALLED_S = 5.0
TICK_S = 0.05


class LoopWatch:
    """Ticks on the loop and checks the ticks from a daemon thread; `stalls` holds each stall's length (s)."""

    def __init__(self, loop: AbstractEventLoop, stall_s: float = STALL_S):
        self.loop, self.stall_s = loop, stall_s
        self.stalls: list[float] = []
        self._last_tick = time.monotonic()
        self._loop_thread = threading.get_ident()  # created on the loop's thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-watch", daemon=True)

    def __enter__(self) -> LoopWatch:
        self.loop.call_soon(self._tick)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        if not self._stop.is_set():
            self.loop.call_later(TICK_S, self._tick)

    def _watch(self) -> None:
        stalled_since, where, told = None, "", False
        while not self._stop.wait(TICK_S):
            late = time.monotonic() - self._last_tick - TICK_S
            if late >= self.stall_s and stalled_since is None:
                stalled_since, told = self._last_tick, False
                where = self._where()
            elif late >= STILL_STALLED_S and stalled_since is not None and not told:
                log.warning("event loop stalled for %.1f s so far (heartbeats wait on it), at %s", late, where)
                told = True
            elif late < self.stall_s and stalled_since is not None:
                length = self._last_tick - stalled_since - TICK_S
                self.stalls.append(length)
                log.warning("event loop stalled for %.1f s (heartbeats wait on it), at %s", length, where)
                stalled_since = None

    def _where(self) -> str:
        """The loop thread's innermost frame in one line; a few frames more at debug level."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "(no frame)"
        stack = traceback.extract_stack(frame, limit=6)
        log.debug("event loop stalled, the loop thread is at:\n%s", "".join(traceback.format_list(stack)).rstrip())
        last = stack[-1]
        return f"{last.filename}:{last.lineno} in {last.name}"
