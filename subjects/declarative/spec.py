"""The subject file (`subject.yaml`), validated by `SubjectFile`; its JSON Schema is published as
`subjects/subject.schema.json` and by `python starter.py subjects --schema`."""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from durable_chaos.contracts import SubjectDefaults

SUBJECT_FILE = "subject.yaml"
COMPOSE_FILE = "docker-compose.yaml"
NAME = r"^[a-z0-9][a-z0-9_-]*$"  # compose project and service names allow these


class _Strict(BaseModel):
    # An unknown field is a typo until proven otherwise: refuse it, naming it.
    model_config = ConfigDict(extra="forbid")


# -- probes: one operation against one member -----------------------------------------------------------------------


class Expect(_Strict):
    status: list[int] = Field(default=[200], description="http: acceptable status codes")
    json_fields: dict[str, Any] = Field(
        default={}, alias="json",
        description="http: dotted path in the JSON answer -> the value it must have, e.g. {health: 'true'}")
    exit_code: int = Field(default=0, description="exec: the exit code that means success")
    output: str | None = Field(default=None, description="exec/tcp: a regular expression the output must match")

    _output = field_validator("output")(lambda v: _regex(v))


def _regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{pattern!r} is not a regular expression: {err}") from None
    return pattern


def placeholders(text: str) -> set[str]:
    """The names a template of the file fills in: {key} in "GET chaos:{key}"."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


class _Probe(_Strict):
    name: str | None = Field(default=None, description="how violations name this probe (default: its kind)")
    expect: Expect = Expect()

    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]

    def templates(self) -> list[str]:
        """The texts that may hold placeholders."""
        raise NotImplementedError

    def unknown_placeholder(self, known: tuple[str, ...]) -> str | None:
        """Why a template names a placeholder not in `known` (one line), or None."""
        for text in self.templates():
            try:
                unknown = sorted(placeholders(text) - set(known))
            except ValueError as err:  # a lone brace: "{" is written "{{"
                return f"{err} (a literal brace is written twice: {{{{ or }}}})"
            if unknown:
                return (f"{{{unknown[0]}}} is not a placeholder here (these are: "
                        f"{', '.join('{' + k + '}' for k in known)})")
        return None


class HttpProbe(_Probe):
    """An HTTP request to a member's published port."""

    kind: Literal["http"]
    port: str | None = Field(default=None, description="which of `ports.names` (default: the first)")
    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    path: str = Field(description="e.g. /health; may use {seq}, {key}, {service}")
    body: str | None = Field(default=None, description="request body; may use {seq}, {key}, {service}")
    headers: dict[str, str] = {}

    def templates(self) -> list[str]:
        return [self.path, *([self.body] if self.body is not None else [])]


class TcpProbe(_Probe):
    """A TCP connection to a member's published port; optionally send a line and match the answer."""

    kind: Literal["tcp"]
    port: str | None = Field(default=None, description="which of `ports.names` (default: the first)")
    send: str | None = Field(default=None, description="bytes to send (YAML escapes like \\r\\n work); may use {seq}")
    reply: Literal["line", "resp", "close"] = Field(
        default="line",
        description="where the answer ends, so an answer that does not match is known without waiting out the "
                    "timeout: `line` at its first newline, `resp` after one whole Redis-protocol (RESP) reply per "
                    "command sent, `close` when the server closes the connection")

    def templates(self) -> list[str]:
        return [self.send] if self.send is not None else []


class ExecProbe(_Probe):
    """A command run inside the member's container (`docker exec`)."""

    kind: Literal["exec"]
    command: list[str] = Field(min_length=1, description="argv; may use {seq}, {key}, {service}")

    def templates(self) -> list[str]:
        return self.command


Probe = Annotated[Union[HttpProbe, TcpProbe, ExecProbe], Field(discriminator="kind")]


class RoleSpec(_Strict):
    probe: Probe = Field(description="passes on the member(s) holding the role now")
    required: bool = Field(default=True, description="exactly one member must hold it, or the steady state is broken")


# -- data operations: a load the safety checkers can reason about ----------------------------------------------------


class _Operation(BaseModel):
    value: str | None = Field(default=None, description="read: a regular expression over the answer; its first group "
                                                        "(or, without a group, the whole match) is the value read")
    nothing: str | None = Field(default=None, description="read: a regular expression; an answer it matches means "
                                                          "the key holds nothing")
    not_applied: str | None = Field(
        default=None, description="write, cas: a regular expression; an answer it matches means the operation "
                                  "certainly did not take effect (e.g. a replica refused it): an error. Any other "
                                  "answer that `expect` refuses may have taken effect")
    mismatch: str | None = Field(
        default=None, description="cas: a regular expression; an answer it matches means the key held another value "
                                  "than `{expected}`, so nothing was swapped: the system's answer, not an error")

    _patterns = field_validator("value", "nothing", "not_applied", "mismatch")(lambda v: _regex(v))


class HttpOperation(HttpProbe, _Operation):
    """An HTTP request to a member's published port; the answer parsed is the body."""


class TcpOperation(TcpProbe, _Operation):
    """A TCP exchange with a member's published port; the answer parsed is the whole reply (see `reply`)."""


class ExecOperation(ExecProbe, _Operation):
    """A command run inside the member's container; the answer parsed is its output."""


Operation = Annotated[Union[HttpOperation, TcpOperation, ExecOperation], Field(discriminator="kind")]

# The placeholders each template may use.
FILLS = {
    "probe": ("seq", "key", "service"),
    "read": ("key", "service"),
    "write": ("key", "value", "service"),
    "cas": ("key", "expected", "new", "service"),
}


class DataLoad(_Strict):
    """Reads, writes and (optionally) compare-and-sets of keys, which the safety checkers hold to a register model
    (with `cas`: a register with compare-and-set). `{key}` is the load's key; a write's `{value}` and a cas's
    `{new}` are unique in the run, and a cas's `{expected}` is a value the key was seen to hold."""

    read: Operation = Field(description="read one key: `value` finds what it holds in the answer, `nothing` "
                                        "recognizes an empty key")
    write: Operation = Field(description="write `{value}` to `{key}`; `expect` is the acknowledgement")
    cas: Operation | None = Field(default=None, description="write `{new}` to `{key}` only if it holds `{expected}`, "
                                                            "atomically; `expect` means swapped, `mismatch` that "
                                                            "the key held something else")

    @field_validator("read", "write", "cas")
    @classmethod
    def _fits(cls, op, info):
        if op is None:
            return op
        f = info.field_name
        why = op.unknown_placeholder(FILLS[f])
        if why:
            raise ValueError(why)
        if f == "read":
            if op.value is None:
                raise ValueError("a read says where the value is in its answer: `value`, a regular expression")
            if op.not_applied is not None:
                raise ValueError("`not_applied` is for write and cas: a read changes nothing")
        elif op.value is not None or op.nothing is not None:
            raise ValueError("`value` and `nothing` are for a read: a write or cas parses no value")
        if f != "cas" and op.mismatch is not None:
            raise ValueError("`mismatch` is for a cas: only a compare-and-set can find another value")
        return op

    @property
    def model(self) -> str:
        return "cas-register" if self.cas is not None else "register"

    def operations(self) -> list:
        return [op for op in (self.read, self.write, self.cas) if op is not None]


def _load_shape(raw: Any) -> str:
    return "data operations" if isinstance(raw, (dict, DataLoad)) else "probe list"


Load = Annotated[
    Union[Annotated[list[Probe], Field(min_length=1), Tag("probe list")], Annotated[DataLoad, Tag("data operations")]],
    Discriminator(_load_shape)]


# -- the rest of the file ---------------------------------------------------------------------------------------


class Ports(_Strict):
    base: int = Field(ge=1024, le=65000, description="default port base; --port-base overrides it per copy")
    names: list[str] = Field(
        default=["client"], min_length=1,
        description="ports every member publishes. Member i (from 1) gets base + j*len(services) + i for the j-th "
                    "name (from 0); the compose file sees it as ${SERVICE_NAME_PORT}, and the first also as "
                    "${SERVICE_PORT}")


class DockerfileBuild(_Strict):
    kind: Literal["dockerfile"]
    dockerfile: str = "Dockerfile"
    files: list[str] = Field(default=[], description="files of the folder copied into the build context")


class WheelBuild(_Strict):
    kind: Literal["wheel"]
    package: str
    version: str
    binary: str = Field(description="path of the static binary in the wheel (its end is enough)")
    dest: str = Field(description="where the image has it; also the entrypoint")


class DebianBuild(_Strict):
    kind: Literal["debian"]
    packages: list[str] = Field(min_length=1)
    suite: str = "bookworm"
    dockerfile: str | None = Field(default=None, description="an extra layer: `ARG BASE` / `FROM ${BASE}`")
    files: list[str] = []


class Image(_Strict):
    ref: str = Field(description="the local tag, e.g. my-kv:1")
    env: str = Field(description="the compose variable holding the image; setting it in the environment uses "
                                 "that image instead (a registry's) and builds nothing")
    build: Annotated[Union[DockerfileBuild, WheelBuild, DebianBuild], Field(discriminator="kind")] | None = None


class Diagnosis(_Strict):
    quorum: Literal["majority", "all", "one"] = "majority"
    log_markers: list[str] = Field(default=[], description="regular expressions marking trouble in the logs")
    notes: str = Field(default="", description="how the system behaves under a fault, for Claude")


class SubjectFile(_Strict):
    """subject.yaml: a subject for durable-chaos, next to its docker-compose.yaml."""

    name: str = Field(pattern=NAME)
    description: str = ""
    services: list[str] = Field(min_length=1, description="compose services of the system, in order")
    targets: list[str] | None = Field(default=None, description="services a run may hit (default: all)")
    project: str | None = Field(default=None, pattern=NAME, description="default compose project (chaos-<name>)")
    ports: Ports
    images: list[Image] = []
    probes: list[Probe] = Field(min_length=1, description="invariants, evaluated on every member")
    load: Load = Field(description="client traffic: data operations {read, write, cas} the safety checkers reason "
                                   "about, or a list of probes cycled by sequence number (availability only)")
    load_on: str | None = Field(default=None, description="send load only to the holder of this role (e.g. the "
                                                          "primary, for writes), following it when it moves")
    roles: dict[str, RoleSpec] = Field(default={}, description="role name -> how to tell who holds it")
    primary_role: str | None = Field(default=None,
                                     description="the role a `leader` target means (default: the first role)")
    diagnosis: Diagnosis = Diagnosis()
    timeouts: SubjectDefaults = SubjectDefaults()
    data: dict[str, str] = Field(default={}, description="service -> its data directory inside its container, where "
                                                         "disk faults act (none: disk faults are refused)")
    data_files: list[str] = Field(default=[], description="globs under each member's data directory: the files "
                                  "that hold its log or blocks (the corrupt fault damages the newest one)")
    rejoins_empty: bool = Field(default=False, description="a member whose data directory is emptied rejoins from "
                                "its peers: the storage faults' repair for a member that cannot start on its data")
    hook: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$",
                             description="module:Class, a DeclarativeSubject subclass in the folder, for more")

    @model_validator(mode="after")
    def _consistent(self) -> SubjectFile:
        unknown = [t for t in self.targets or [] if t not in self.services]
        if unknown:
            raise ValueError(f"targets {unknown} are not services")
        unknown = [s for s in self.data if s not in self.services]
        if unknown:
            raise ValueError(f"data: {unknown} are not services")
        if self.data_files and not self.data:
            raise ValueError("data_files: name the data directories too (data: {service: path})")
        relative = [path for path in self.data.values() if not path.startswith("/")]
        if relative:
            raise ValueError(f"data: {relative} must be absolute paths inside the container")
        load = self.load if isinstance(self.load, list) else self.load.operations()
        for probe in [*self.probes, *load, *(r.probe for r in self.roles.values())]:
            port = getattr(probe, "port", None)
            if port is not None and port not in self.ports.names:
                raise ValueError(f"probe {probe.label()!r} uses port {port!r}, not one of ports.names")
        for probe in [*self.probes, *(self.load if isinstance(self.load, list) else []),
                      *(r.probe for r in self.roles.values())]:
            why = probe.unknown_placeholder(FILLS["probe"])
            if why:
                raise ValueError(f"probe {probe.label()!r}: {why}")
        for field_name in ("primary_role", "load_on"):
            role = getattr(self, field_name)
            if role is not None and role not in self.roles:
                raise ValueError(f"{field_name} {role!r} is not one of roles")
        return self


def schema() -> dict:
    return SubjectFile.model_json_schema(by_alias=True)
