"""The subject file (`subject.yaml`), validated by `SubjectFile`; its JSON Schema is published as
`subjects/subject.schema.json` and by `python starter.py subjects --schema`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class _Probe(_Strict):
    name: str | None = Field(default=None, description="how violations name this probe (default: its kind)")
    expect: Expect = Expect()

    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class HttpProbe(_Probe):
    """An HTTP request to a member's published port."""

    kind: Literal["http"]
    port: str | None = Field(default=None, description="which of `ports.names` (default: the first)")
    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    path: str = Field(description="e.g. /health; may use {seq}, {key}, {service}")
    body: str | None = Field(default=None, description="request body; may use {seq}, {key}, {service}")
    headers: dict[str, str] = {}


class TcpProbe(_Probe):
    """A TCP connection to a member's published port; optionally send a line and match the answer."""

    kind: Literal["tcp"]
    port: str | None = Field(default=None, description="which of `ports.names` (default: the first)")
    send: str | None = Field(default=None, description="bytes to send (YAML escapes like \\r\\n work); may use {seq}")


class ExecProbe(_Probe):
    """A command run inside the member's container (`docker exec`)."""

    kind: Literal["exec"]
    command: list[str] = Field(min_length=1, description="argv; may use {seq}, {key}, {service}")


Probe = Annotated[Union[HttpProbe, TcpProbe, ExecProbe], Field(discriminator="kind")]


class RoleSpec(_Strict):
    probe: Probe = Field(description="passes on the member(s) holding the role now")
    required: bool = Field(default=True, description="exactly one member must hold it, or the steady state is broken")


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
    load: list[Probe] = Field(min_length=1, description="client operations, cycled by sequence number")
    load_on: str | None = Field(default=None, description="send load only to the holder of this role (e.g. the "
                                                          "primary, for writes), following it when it moves")
    roles: dict[str, RoleSpec] = Field(default={}, description="role name -> how to tell who holds it")
    primary_role: str | None = Field(default=None, description="the role a `leader` target means (default: the first role)")
    diagnosis: Diagnosis = Diagnosis()
    timeouts: SubjectDefaults = SubjectDefaults()
    hook: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$",
                             description="module:Class, a DeclarativeSubject subclass in the folder, for more")

    @model_validator(mode="after")
    def _consistent(self) -> SubjectFile:
        unknown = [t for t in self.targets or [] if t not in self.services]
        if unknown:
            raise ValueError(f"targets {unknown} are not services")
        for probe in [*self.probes, *self.load, *(r.probe for r in self.roles.values())]:
            port = getattr(probe, "port", None)
            if port is not None and port not in self.ports.names:
                raise ValueError(f"probe {probe.label()!r} uses port {port!r}, not one of ports.names")
        for field_name in ("primary_role", "load_on"):
            role = getattr(self, field_name)
            if role is not None and role not in self.roles:
                raise ValueError(f"{field_name} {role!r} is not one of roles")
        return self


def schema() -> dict:
    return SubjectFile.model_json_schema(by_alias=True)
