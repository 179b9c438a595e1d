"""Faults on a member's container: kill, stop, pause. Docker's own state tells whether each is in effect."""

from __future__ import annotations

import abc
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from faults.base import Fault, Target


class _CheckThenAct(Fault):
    """Docker answers the check cheaply, so each half looks before it acts."""

    @abc.abstractmethod
    def _inject(self, t: Target) -> None: ...

    @abc.abstractmethod
    def _undo(self, t: Target) -> None: ...

    def inject(self, t: Target) -> bool:
        if self.in_effect(t):
            return False
        self._inject(t)
        return True

    def undo(self, t: Target) -> bool:
        if not self.in_effect(t):
            return False
        self._undo(t)
        return True


class _Down(_CheckThenAct):
    """Undone by starting the container again. A member that is not running is down, whoever stopped it."""

    def in_effect(self, t: Target) -> bool:
        t.container.reload()
        return not t.container.state.running

    def _undo(self, t: Target) -> None:
        t.container.start()

    def in_effect_since(self, t: Target) -> datetime | None:
        return t.container.state.finished_at


class Kill(_Down):
    kind = "kill"
    help = "SIGKILL the member's container; undone by starting it"

    def _inject(self, t: Target) -> None:
        t.container.kill("SIGKILL")


class StopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_s: float = Field(default=10.0, ge=0, le=600, description="seconds between SIGTERM and SIGKILL")


class Stop(_Down):
    kind = "stop"
    help = "SIGTERM, then SIGKILL after grace_s seconds; undone by starting it"
    Params = StopParams

    def label(self) -> str:
        return f"stop (grace {self.params.grace_s:g}s)"

    def _inject(self, t: Target) -> None:
        t.container.stop(time=round(self.params.grace_s))


class Pause(_CheckThenAct):
    kind = "pause"
    help = "freeze every process of the member (cgroup freezer); undone by unpausing"

    def in_effect(self, t: Target) -> bool:
        # A paused container still reads as running: only State.Paused tells.
        t.container.reload()
        return bool(t.container.state.paused)

    def _inject(self, t: Target) -> None:
        t.container.pause()

    def _undo(self, t: Target) -> None:
        t.container.unpause()
