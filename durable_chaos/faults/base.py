"""The fault plugin interface: a kind is an inject/undo pair with an is-in-effect check, and a parameters model.

Both halves are idempotent, because Temporal may run an activity more than once and a reaper may come after the
run: injecting a fault that is in effect, or undoing one that is not (the member restarted, and its network rules
went with its old namespace), is success and says so. The activities give a fault a `Target` per member to hit;
Docker stays behind python-on-whales objects and the network helper (`faults.netns`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from python_on_whales import Container

from durable_chaos.contracts import ContainerState
from durable_chaos.images import ImageSpec


class BadFault(ValueError):
    """A fault the run must refuse before touching anything: one line for the user (exit 2). `field` names what was
    wrong (kind, params, target, count), so an experiment file can point at its line."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Which members their subject's own check finds healthy now (asked by the restore: activities/faults.py).
Healthy = Callable[[], set[str]]


@dataclass(frozen=True)
class Target:
    """One member to hit, as the activities found it."""

    service: str
    container: Container
    # Every member's addresses on the subject's networks (service -> IPs), this one's included: who its peers are.
    addresses: dict[str, list[str]]
    # Names what this run puts in place, so undo and the reaper remove exactly that (see durable_chaos.ids.fault_tag).
    tag: str
    # Where this member keeps its data inside its container, as its subject declares it (None: not declared).
    data_path: str | None = None
    # The file libfaketime reads this member's wall-clock offset from, as its subject declares it (None: its
    # processes do not run under libfaketime).
    clock_file: str | None = None
    # The files under data_path that hold its log or blocks (globs, as its subject declares them): corrupt picks one.
    data_files: tuple[str, ...] = ()
    # Its subject's repair for a member that cannot start on its data: emptied, it rejoins from its peers.
    rejoins_empty: bool = False

    def peer_addresses(self, services: list[str] | None = None) -> list[str]:
        """The addresses of `services` (default: every other member)."""
        others = services if services is not None else [s for s in self.addresses if s != self.service]
        return sorted({ip for s in others for ip in self.addresses.get(s, [])})


class Fault(abc.ABC):
    """A kind carries everything about itself, so the diagnosis, the evidence and the CLI learn nothing about it
    but through the catalog. A class that names a `kind` must give all of `REQUIRED`, `seen_on`, and `observe` if it
    has a `netns_probe` (checked when the class is defined: the diagnosis asks these of classes it never
    instantiates, so abc alone would not tell; a kind without advice or a signature must not pass in silence)."""

    kind: ClassVar[str]
    help: ClassVar[str]  # one line for `chaos --help`
    Params: ClassVar[type[BaseModel]] = NoParams
    # How a member hit by this kind looks from outside, for Claude's prompt (the rules engine asks `seen_on`).
    looks_like: ClassVar[str]
    # What to do about members showing this kind, for the rules diagnosis; `{who}` becomes their names.
    advice: ClassVar[str]
    # A member showing this kind serves nothing, even if it reads as running (frozen, down): the diagnosis counts
    # it out of the quorum. False when it still answers, however badly (loss, a rate cap).
    out_of_service: ClassVar[bool]
    # Where the kind shows beyond Docker's own state: a shell command run in every running member's network
    # namespace when evidence is gathered (one helper runs every kind's command; kinds sharing one share its run),
    # its output handed to `observe`. None for a kind Docker's state shows (kill, stop, pause).
    netns_probe: ClassVar[str | None] = None
    # The member's data must run on a power-loss layer (faults/powerfs): preflight puts the copy's members there.
    needs_storage_layer: ClassVar[bool] = False

    REQUIRED: ClassVar[tuple[str, ...]] = ("help", "looks_like", "advice", "out_of_service")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:  # a family of kinds (_Down, _Qdisc): its members are checked
            return
        missing = [name for name in cls.REQUIRED if not hasattr(cls, name)]
        if getattr(cls.seen_on, "__isabstractmethod__", False):
            missing.append("seen_on")
        if cls.netns_probe is not None and cls.observe.__func__ is Fault.observe.__func__:
            missing.append("observe (it has a netns_probe)")
        if missing:
            raise TypeError(f"fault kind {cls.kind!r} ({cls.__name__}) lacks {', '.join(missing)}")

    @classmethod
    @abc.abstractmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        """This kind's signature on a member's observed state, as a finding ("etcd2 is paused: ..."), or None.
        Diagnosis asks every kind about every member: it is never told which kind a run injected."""

    @classmethod
    def observe(cls, probe_out: list[str]) -> list[str]:
        """This kind's signs among the output lines of its `netns_probe` (which other kinds may share), kept as
        they read: the evidence shows them to Claude, and `seen_on` reads them back through `signs_on`."""
        return []

    @classmethod
    def member_signs(cls, c: Container) -> list[str]:
        """This kind's signs on a running member that neither Docker's state nor the network namespace shows (a
        CPU quota, a stopped process, a full volume), read however the kind reads them (its cgroup, its volumes,
        a file in it) from `c`, the member as Docker described it once for every kind. Asked of every kind for
        every running member when evidence is gathered, so it must be cheap and must not fail: nothing seen is []."""
        return []

    @classmethod
    def signs_on(cls, c: ContainerState) -> list[str]:
        """The details of this kind's signs found on the member."""
        return [s.detail for s in c.signs if s.kind == cls.kind]

    def __init__(self, params: BaseModel):
        self.params = params

    def label(self) -> str:
        """The kind and its parameters, as a person reads them ("loss 30%"): run summary, search attribute, reports."""
        return self.kind

    def images(self) -> list[ImageSpec]:
        """Images the fault needs besides the subject's (the network helper), built in preflight when missing."""
        return []

    def unsupported(self) -> str | None:
        """Why this kind cannot run on this Docker host (a missing kernel feature), or None. Asked in preflight."""
        return None

    def refuse(self, targets: list[Target]) -> str | None:
        """Why this fault cannot run on these members (the members a run may hit, looked at in preflight before
        anything is injected): a process a member does not run, a member without a data volume. None: it can."""
        return None

    def fixed_targets(self, services: tuple[str, ...]) -> list[str] | None:
        """Members the parameters themselves choose (a partition's groups), or None to use --target/--count."""
        return None

    @abc.abstractmethod
    def in_effect(self, t: Target) -> bool:
        """Is the fault visible on the member now? Read from the real state: the container, its namespace."""

    @abc.abstractmethod
    def inject(self, t: Target) -> bool:
        """Put the fault in place; False if it already was (a retried activity must not hit twice)."""

    @abc.abstractmethod
    def undo(self, t: Target) -> bool:
        """Take the fault away; False if it was not in effect (already undone, or the member restarted)."""

    def undo_all(self, targets: list[Target], healthy: Healthy | None = None) -> list[bool]:
        """`undo` on every member of one request, in turn. `healthy` asks the subject's own check which members are
        healthy now; a kind whose members must come back together overrides this to use it (the storage faults:
        a member that may not start on its disk is watched until healthy, and can only be healthy once its peers
        are up)."""
        return [self.undo(t) for t in targets]

    def repaired(self, t: Target) -> str | None:
        """What its undo had to do beyond taking the fault away, as the report says it (a member that could not
        start, brought back by its subject's repair), or None. Asked after `undo`, which keeps it where a retried
        undo finds it."""
        return None

    def evidence_of_effect(self, t: Target) -> str | None:
        """What the fault has done to the member so far, as evidence that it took effect, or None if it did
        nothing. Asked while the fault is on, after detection. By default: it is in effect now (a member down or
        frozen does nothing else); a kind whose rules can be in place and still touch nothing says more."""
        return f"{t.service}: {self.kind} in effect" if self.in_effect(t) else None

    def began_at(self, t: Target) -> datetime | None:
        """When a fault this inject just put in place began, if it took a while (a corruption begins with the kill,
        before the file is damaged and the member started again), or None: as the inject returns."""
        return None

    def in_effect_since(self, t: Target) -> datetime | None:
        """When a fault found already in effect began, if the container can tell (a retry keeps the first time)."""
        return None
