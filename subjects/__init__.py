"""Subjects: the systems we break on purpose.

A subject *definition* (one folder per subject) says what the system is made of: its compose file, the services a
run may target, the invariants of its steady state and the operation its load generator performs. A subject
*instance* is one running copy of it (compose project name + port base), so copies can run side by side.

Definitions speak only the subject's own protocol (httpx); everything Docker lives in `activities.docker`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import httpx

from contracts import CheckResult, SubjectRef


class UnknownSubject(ValueError):
    pass


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    # Files copied into an empty build context next to `dockerfile`; None means "use the image as is" (a user's
    # registry image, pulled by compose).
    dockerfile: Path | None = None
    context_files: tuple[Path, ...] = ()


class Subject(abc.ABC):
    name: str
    folder: Path
    services: tuple[str, ...]
    targets: tuple[str, ...]
    default_project: str
    default_port_base: int

    @property
    def compose_file(self) -> Path:
        return self.folder / "docker-compose.yaml"

    @abc.abstractmethod
    def compose_env(self, port_base: int) -> dict[str, str]:
        """Variables the compose file is rendered with for one instance (ports, image)."""

    @abc.abstractmethod
    def endpoints(self, port_base: int) -> dict[str, str]:
        """service -> base URL reachable from this host (always 127.0.0.1)."""

    @abc.abstractmethod
    def image(self) -> ImageSpec:
        """The image the compose file runs, and how to build it locally when it is missing."""

    @abc.abstractmethod
    async def check(
        self, http: httpx.AsyncClient, endpoints: dict[str, str], timeout: float, fail_fast: bool = False
    ) -> CheckResult:
        """Evaluate every invariant once. Must never raise for a sick subject: sickness is a result.

        With `fail_fast`, return as soon as one violation is certain instead of waiting for every answer: a
        polling loop only needs to know *that* the steady state is broken, and a survivor of a killed leader can
        hang until the timeout while the dead member answers at once. The result then lists only the members
        that answered and the violations seen so far."""

    @abc.abstractmethod
    async def load_op(self, http: httpx.AsyncClient, endpoint: str, seq: int, timeout: float) -> None:
        """One unit of client traffic; raises on failure."""


@dataclass(frozen=True)
class SubjectInstance:
    subject: Subject
    project: str
    port_base: int

    @property
    def endpoints(self) -> dict[str, str]:
        return self.subject.endpoints(self.port_base)


def registry() -> dict[str, Subject]:
    from subjects.etcd import ETCD

    return {s.name: s for s in (ETCD,)}


def get_subject(name: str) -> Subject:
    subjects = registry()
    if name not in subjects:
        raise UnknownSubject(f"unknown subject {name!r} (known: {', '.join(sorted(subjects))})")
    return subjects[name]


def resolve(ref: SubjectRef) -> SubjectInstance:
    subject = get_subject(ref.name)
    return SubjectInstance(
        subject=subject,
        project=ref.project or subject.default_project,
        port_base=ref.port_base if ref.port_base is not None else subject.default_port_base,
    )
