"""The subject plugin interface: what a system we break on purpose must tell the runner, and nothing more.

A subject *definition* knows its own system: its services and the ones a run may target, the compose file and the
images it runs, its invariants, its load operation, who holds which role right now, and hints for diagnosis. It
speaks its own protocol (HTTP, a native client, or a command run inside a member) through a `Session` it opens
itself, so the activities never learn a protocol. Docker is not in here: a session that must run a command in a
member gets a `Members` handle from the activities, which own Docker.

A subject *instance* is one running copy (compose project name + port base), so copies can run side by side.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from durable_chaos.contracts import CheckResult, SubjectDefaults

# Image recipes live below subjects (fault kinds name images too); a subject's author still finds them here.
from durable_chaos.images import (  # noqa: F401
    FromDebian,
    FromDockerfile,
    FromWheelBinary,
    ImageSpec,
    local_or_upstream,
)
from durable_chaos.quorum import QuorumRule


class UnknownSubject(ValueError):
    """The name or folder does not lead to a subject this process can load (exit 2: bad input)."""


class BadSubjectFile(ValueError):
    """A subject folder that cannot be used as written: one line naming the file and the field."""


# -- diagnosis hints -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosisHints:
    """What the rules engine and Claude's prompt need to know about this system and nothing else does."""

    # How many members must be up for the system to serve (see `durable_chaos.quorum`).
    quorum: QuorumRule = "majority"
    # Regular expressions marking trouble in this system's own log format, beside the generic words.
    log_markers: tuple[str, ...] = ()
    # Sentences for Claude's system prompt: how this system behaves under a fault (re-elections, failovers...).
    prompt_notes: str = ""


# -- sessions ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str  # stdout and stderr


class Members(Protocol):
    """Access to the members' containers, provided by the activities (which own Docker)."""

    async def exec(self, service: str, argv: list[str], timeout: float) -> ExecResult: ...


class NotApplied(Exception):
    """The system said for certain that an operation did not take effect (outcome `fail`, not `info`): e.g. the
    connection was refused, so nothing was sent."""


class CompareFailed(NotApplied):
    """A compare-and-set found another value than it expected, and did not swap. The system answered, and its
    answer was no: not an error of availability (a lock someone else holds), and not in the error rate."""


@dataclass(frozen=True)
class Reading:
    value: str | None  # None: the key holds nothing
    token: int | None = None  # the token the value was written with (etcd mod revision, NATS sequence, xmin)


class Session(abc.ABC):
    """An open connection to one running instance, for checks, load and role probes. Closed with `aclose`.

    Load: a session names the data model its operations follow (`model`) and offers that model's operations, which
    the safety checkers reason about (durable_chaos/safety/workloads.py says which it is asked for). Without a
    model it offers an opaque `load_op`, and only availability is measured."""

    # register: read/write; cas-register: and cas; queue: publish/fetch/drain; list-append: transact.
    model: str | None = None
    # list-append: the isolation level the system promises its transactions ("serializable",
    # "snapshot-isolation", "repeatable-read", "read-committed"); the checker holds it to that level.
    isolation: str | None = None
    # What the tokens `write` returns are called ("revision"); None: the system returns none.
    token_name: str | None = None
    # Tokens come from a counter only this load advances (a stream of its own): an unexplained gap is a violation.
    gapless_tokens: bool = False
    # queue: the stream keeps a message after a consumer acknowledged it (a log, not a work queue), so a message that
    # no replica holds at the end is lost even if it was delivered.
    keeps_delivered: bool = False

    @abc.abstractmethod
    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        """Evaluate every invariant once. Must never raise for a sick subject: sickness is a result.

        With `fail_fast`, return as soon as one violation is certain instead of waiting for every answer: a
        polling loop only needs to know *that* the steady state is broken, and a survivor of a killed leader can
        hang until the timeout while the dead member answers at once. The result then lists only the members
        that answered and the violations seen so far."""

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        """Read one key as load client number `client`. Raises on failure (`NotApplied` is not needed: a read
        changes nothing). The session decides where it goes and fails over to, as a real client would; the key is
        the load's, the session may put it under a prefix of its own."""
        raise NotImplementedError

    async def write(self, client: int, key: str, value: str, timeout: float) -> int | None:
        """Write one key; returns the system's token for the write, if it has one. Raises `NotApplied` when the
        write certainly did not happen, anything else when it may have."""
        raise NotImplementedError

    async def cas(self, client: int, key: str, expected: str, new: str, timeout: float) -> int | None:
        """Compare-and-set: write `new` if the key holds `expected`; returns the write's token, if any. Raises
        `NotApplied` when it certainly did not swap (the key held something else, or nothing was sent)."""
        raise NotImplementedError

    async def publish(self, client: int, message: dict, timeout: float) -> int | None:
        """Queue: publish one message ({"id", "publisher", "n"}); returns its place in the log (a sequence)."""
        raise NotImplementedError

    async def fetch(self, client: int, timeout: float) -> list[list]:
        """Queue: receive (and acknowledge) what a consumer is given now, as [[id, sequence], ...]."""
        raise NotImplementedError

    async def drain(self, timeout: float) -> dict[str, list[list] | str]:
        """Queue, after the restore: every message each replica holds, as {service: [[id, sequence], ...]}; for a
        replica that could not be read, why not (the checker then knows how many replicas it saw)."""
        raise NotImplementedError

    async def transact(self, client: int, micro_ops: list[list], timeout: float) -> list[list]:
        """List-append: run ["append", key, value] and ["r", key, None] in one transaction; returns them with the
        reads filled in. Raises `NotApplied` when it certainly did not commit."""
        raise NotImplementedError

    async def load_op(self, client: int, seq: int, timeout: float) -> None:
        """One unit of client traffic, for a session without a `model`; raises on failure."""
        raise NotImplementedError

    async def roles(self, timeout: float) -> dict[str, str]:
        """role -> the service holding it now, read from the system itself. By default from a full check."""
        return (await self.check(timeout)).roles

    async def aclose(self) -> None:  # noqa: B027 - nothing to close unless a session holds connections
        pass

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


# -- the definition ------------------------------------------------------------------------------------------------


class Subject(abc.ABC):
    name: str
    folder: Path
    services: tuple[str, ...]
    targets: tuple[str, ...]
    default_project: str
    default_port_base: int
    # Host ports one instance takes from its port base (base+1 .. base+ports): how copies avoid each other.
    ports: int = 3
    # The role whose holder is "the leader" when a run targets by role; the other targets are its followers. None:
    # the subject has no roles, and `--target leader|follower` is refused.
    primary_role: str | None = "leader"
    hints: DiagnosisHints = DiagnosisHints()
    defaults: SubjectDefaults = SubjectDefaults()
    # service -> where that member keeps its data inside its container (disk faults act there); empty: undeclared.
    data_paths: dict[str, str] = {}
    # service -> the file in its container that libfaketime (preloaded into every process of that member) reads its
    # wall-clock offset from: the clock-skew fault rewrites it. Members not listed cannot have their clock shifted
    # (Go programs such as etcd and NATS read the clock through the vDSO, out of libfaketime's reach).
    clock_files: dict[str, str] = {}
    # The files that hold a member's log or blocks, as globs under its data path: `corrupt` damages the newest one.
    data_files: tuple[str, ...] = ()
    # A member whose data folder is emptied rejoins from its peers and catches up (NATS, Patroni): the storage
    # faults' repair for a member that cannot start on what its disk holds. False (etcd): an emptied member must be
    # removed from the cluster and added again, which the runner does not do; a damaged file is put back instead.
    rejoins_empty: bool = False
    # Where the definition came from, for `starter.py subjects` ("entry point etcd", "folder /path").
    origin: str = ""

    @property
    def compose_file(self) -> Path:
        return self.folder / "docker-compose.yaml"

    @abc.abstractmethod
    def compose_env(self, port_base: int) -> dict[str, str]:
        """The port variables the compose file is rendered with for one instance."""

    def compose_variables(self, port_base: int) -> dict[str, str]:
        """Everything the compose file is rendered with: the images (each under its variable) and the ports."""
        return {i.upstream_env: i.ref for i in self.images() if i.upstream_env} | self.compose_env(port_base)

    @abc.abstractmethod
    def images(self) -> list[ImageSpec]:
        """The images the compose file runs, and how to build each locally when it is missing."""

    @abc.abstractmethod
    def session(self, instance: SubjectInstance, members: Members) -> Session:
        """Open a session on a running instance (its ports are on 127.0.0.1)."""


@dataclass(frozen=True)
class SubjectInstance:
    subject: Subject
    project: str
    port_base: int

    def port(self, offset: int) -> int:
        """The host port `offset` (1-based) of this instance."""
        return self.port_base + offset
