"""A watchdog for the worker's event loop.

Heartbeats, activity completions and workflow tasks all leave the worker through its asyncio loop. A loop that does
not run for a second (synchronous work in an async activity, a lock, a page fault storm on a busy host) looks to the
server like a dead worker once the stall outlasts a heartbeat timeout: the activity is retried elsewhere and a load
window is lost. The watch notices the stall from a thread of its own, while it lasts, and logs what the loop thread
was executing at that moment, so the cause is named instead of guessed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from asyncio import AbstractEventLoop

log = logging.getLogger("chaos.worker")
# Below this a stall is harmless: the heartbeat timeout leaves the loop well over a second.
STALL_S = 0.5
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
        stalled_since = None
        while not self._stop.wait(TICK_S):
            late = time.monotonic() - self._last_tick - TICK_S
            if late >= self.stall_s and stalled_since is None:
                stalled_since = self._last_tick
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame, limit=6)).rstrip() if frame else "(no frame)"
                log.warning("event loop stalled for %.1f s so far (heartbeats wait on it); the loop is at:\n%s",
                            late, where)
            elif late < self.stall_s and stalled_since is not None:
                length = self._last_tick - stalled_since
                self.stalls.append(length)
                log.warning("event loop ran again after a %.1f s stall", length)
                stalled_since = None
