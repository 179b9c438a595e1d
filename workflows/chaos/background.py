"""The work that runs alongside the experiment: the load, the guardrails and the user's own detectors.

Each is an asyncio task of the workflow (deterministic: Temporal orders their commands). Their results land on the
run's record; a stop condition that trips is kept there for `supervise` to cut the experiment short on.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from workflows import compat
from workflows.chaos import stages
from workflows.chaos.state import Record
from workflows.chaos.view import View

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import (
        RECENT_WINDOWS,
        ChaosInput,
        DetectorResult,
        ExternalDetector,
        LoadRequest,
        Trip,
    )
    from durable_chaos.wording import trip_reason


class Background:
    def __init__(self, inp: ChaosInput, record: Record, view: View) -> None:
        self.inp, self.record, self.view = inp, record, view
        self.stop_load = False
        self.rate = inp.load_rate  # a load step changes it from the next window on
        # Stop conditions count until the restore begins (then the fault is being undone anyway); after that, only a
        # load window that began before it still counts: it ends later, but holds what the fault did.
        self.restore_began: datetime | None = None

    def start(self) -> tuple[asyncio.Task, asyncio.Task | None]:
        """The load for the whole run, and the guardrails' watch if any condition needs watching."""
        load = asyncio.create_task(self._load_loop())
        watch = asyncio.create_task(self._watch()) if self.inp.stop.watched else None
        return load, watch

    def start_their_detectors(self, since: datetime) -> list[asyncio.Task]:
        """The user's own monitoring, timed from the same instant as ours, in parallel with it."""
        return [asyncio.create_task(self._their_detector(d, since)) for d in self.inp.detectors]

    def stop_guarding(self) -> None:
        """The compensation begins: from now on a trip cuts nothing short (see `tripped`)."""
        self.restore_began = workflow.now()

    def tripped(self, trip: Trip | None, window_began: datetime | None = None) -> None:
        """Keep the first trip while the guardrails count; `supervise` cuts the experiment short on it. A load
        window that began before the restore did and ends after it still counts: its errors came while the fault
        was on, and dropping them let a run (and a pause-on-failure schedule) pass past the user's limit. It only
        fails the run then; there is nothing left to cut short."""
        if trip is None or self.record.trip is not None:
            return
        guarded = self.restore_began is None
        late = not guarded and window_began is not None and window_began < self.restore_began
        if late:
            compat.deprecated("trip-in-last-window")
        if guarded or late:
            self.record.trip = trip
            workflow.logger.warning("%s", trip_reason(trip))

    async def _load_loop(self) -> None:
        load_since = workflow.now()
        due_from = None  # where the last window's schedule ended: the next one carries it on
        rec = self.record
        retried = compat.patched("load-window-retry")  # asked once, before the first window: its marker stays there
        while not self.stop_load:
            began = workflow.now()
            try:
                window = await stages.load_window(self.inp, self._load_request(load_since, due_from),
                                                  len(rec.windows) + 1, retried)
            except ActivityError:
                rec.load_rounds += 1
                due_from = None
                compat.deprecated("load-after-lost-window")
                # The next window starts a second after this one began: at once after a window lost with its worker
                # (it ran, then its heartbeats stopped; the gap is only the time to notice), a second later after one
                # that failed at once (a subject that refuses), so a broken load never spins.
                wait = timedelta(seconds=1) - (workflow.now() - began)
                if wait > timedelta(0):
                    await workflow.sleep(wait)
                continue
            rec.load_rounds += 1
            due_from = window.start + timedelta(seconds=self.inp.load_window_s)
            rec.windows.append(window)
            self.tripped(window.tripped, window.start)
            self.view.progress.windows = len(rec.windows)
            self.view.progress.recent_windows = rec.windows[-RECENT_WINDOWS:]
            self.view.details()

    def _load_request(self, load_since: datetime, due_from: datetime | None) -> LoadRequest:
        inp = self.inp
        req = LoadRequest(subject=inp.subject, window_s=inp.load_window_s, concurrency=inp.load_concurrency,
                          check_timeout_s=inp.check_timeout_s, rate=self.rate, due_from=due_from,
                          probes=[p for p in inp.hypothesis if p.sampled])  # asked by the window itself
        if inp.stop.on_load:
            # The window judges the load's figures itself (stop conditions are evaluated in activities): it gets
            # what it cannot see, the windows before it inside the error rate's window and the last success.
            cut = workflow.now() - timedelta(seconds=inp.stop.error_window_s + inp.load_window_s)
            windows = self.record.windows
            req.stop, req.load_since = inp.stop, load_since
            req.recent = [w for w in windows if w.end > cut]
            req.last_ok_before = max((w.last_ok_at for w in windows if w.last_ok_at), default=None)
        return req

    async def _watch(self) -> None:
        self.tripped(await stages.watch_guardrails(self.inp))

    async def _their_detector(self, detector: ExternalDetector, since: datetime) -> None:
        try:
            result = await stages.their_detector(self.inp, detector, since)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            result = DetectorResult(name=detector.name, fired=False, detail=f"could not ask it: {err.cause or err}")
        self.record.theirs[detector.name] = result
