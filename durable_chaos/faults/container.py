"""Faults on a member's container: kill, stop, pause. Docker's own state tells whether each is in effect."""

from __future__ import annotations

import abc
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from durable_chaos.contracts import ContainerState
from durable_chaos.faults.base import Fault, Target


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

    out_of_service = True

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
    looks_like = "killed: the container is not running and exited with code 137 (SIGKILL), connections refused"
    advice = "Start {who} again and find what sent the SIGKILL (orchestrator events, OOM killer, an operator)."

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        if c.running or c.exit_code != 137:
            return None
        how = "by the OOM killer" if c.oom_killed else "with SIGKILL"
        return f"{c.service} was killed {how} (container {c.container} exited with code 137)"

    def _inject(self, t: Target) -> None:
        t.container.kill("SIGKILL")


class StopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_s: float = Field(default=10.0, ge=0, le=600, description="seconds between SIGTERM and SIGKILL")


class Stop(_Down):
    kind = "stop"
    help = "SIGTERM, then SIGKILL after grace_s seconds; undone by starting it"
    Params = StopParams
    looks_like = ("stopped: the container is not running and exited on its own after SIGTERM (code 0 or 143), "
                  "a graceful shutdown")
    advice = "Start {who} again and find who stopped it (deploys, orchestrator, an operator's docker stop)."

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        if c.running or c.exit_code not in (0, 143):
            return None
        return f"{c.service} was stopped: container {c.container} shut down after SIGTERM (exit code {c.exit_code})"

    def label(self) -> str:
        return f"stop (grace {self.params.grace_s:g}s)"

    def _inject(self, t: Target) -> None:
        t.container.stop(time=round(self.params.grace_s))


class Pause(_CheckThenAct):
    kind = "pause"
    help = "freeze every process of the member (cgroup freezer); undone by unpausing"
    looks_like = ("paused: the container reads as running but is frozen; connections are accepted by the kernel and "
                  "never answered, so health checks time out instead of being refused")
    advice = "Unpause {who} (docker unpause) and find what froze it (a checkpoint, a debugger, an operator)."
    out_of_service = True

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        if c.status != "paused":  # Docker's status for a frozen container, which still reads as running
            return None
        return (f"{c.service} is paused: container {c.container} is frozen by the cgroup freezer, so it answers "
                "nothing and checks time out rather than being refused")

    def in_effect(self, t: Target) -> bool:
        # A paused container still reads as running: only State.Paused tells.
        t.container.reload()
        return bool(t.container.state.paused)

    def _inject(self, t: Target) -> None:
        t.container.pause()

    def _undo(self, t: Target) -> None:
        t.container.unpause()
