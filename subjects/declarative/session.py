"""The session of a subject read from a folder: its probes are the invariants, evaluated on every member, its role
probes say who holds each role, and its load is either data operations (read, write, cas of a key, parsed from the
answers) or probes cycled by sequence number."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypeVar

import httpx

from durable_chaos.contracts import CheckResult, MemberHealth
from subjects.base import CompareFailed, Members, NotApplied, Reading, Session, SubjectInstance
from subjects.checks import ask_members, member_violations
from subjects.declarative.probes import Answer, ProbeFailed, exec_answer, http_answer, tcp_answer
from subjects.declarative.spec import DataLoad, ExecProbe, HttpProbe, RoleSpec, TcpProbe
from subjects.http import describe, http_client

if TYPE_CHECKING:  # the subject's module imports this one, for `session_class`
    from subjects.declarative.subject import DeclarativeSubject

T = TypeVar("T")


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

    @property
    def model(self) -> str | None:
        # A hook's session that offers operations in Python names its model itself, overriding this.
        load = self.subject.spec.load
        return load.model if isinstance(load, DataLoad) else None

    async def answer(self, probe: HttpProbe | TcpProbe | ExecProbe, service: str, fields: dict, timeout: float,
                     whole: bool = False) -> Answer:
        """Send one probe or operation to one member and take its answer (`whole`: all of it, to parse)."""
        if isinstance(probe, HttpProbe):
            return await http_answer(self.http, self.port(service, probe.port), probe, fields, timeout)
        if isinstance(probe, TcpProbe):
            return await tcp_answer(self.port(service, probe.port), probe, fields, timeout, whole)
        return await exec_answer(self.members, probe, service, fields, timeout)

    async def run(self, probe: HttpProbe | TcpProbe | ExecProbe, service: str, seq: int, timeout: float) -> None:
        """Run one probe against one member; raise ProbeFailed (or a transport error) when it does not pass."""
        answer = await self.answer(probe, service, {"seq": seq, "key": seq % 128, "service": service}, timeout)
        if answer.wrong is not None:
            raise ProbeFailed(answer.wrong)

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
        asked = await ask_members(at, (self._member(s, timeout) for s in self.subject.services),
                                  lambda member: member, fail_fast)
        if isinstance(asked, CheckResult):  # failed fast
            return asked
        members, _, latency = asked
        violations = member_violations(members)
        roles: dict[str, str] = {}
        for role, spec in self.subject.spec.roles.items():
            holders = await self._holders(spec, timeout)
            if len(holders) == 1:
                roles[role] = holders[0]
            elif spec.required:
                violations.append(f"no {role}" if not holders else f"{len(holders)} members claim {role}: "
                                                                    f"{', '.join(holders)}")
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations,
                           latency_ms=latency)

    async def _to_target(self, client: int, timeout: float, send: Callable[[str], Awaitable[T]]) -> T:
        """`send` a client's operation to the member it goes to, and move on after an error, as a client does."""
        role = self.subject.spec.load_on
        if role is not None:
            # To the role's holder (a primary takes the writes), asked again after any error: a failover moves it.
            if self._load_target is None:
                holders = await self._holders(self.subject.spec.roles[role], timeout)
                if len(holders) != 1:
                    raise NotApplied(f"no single {role} to send load to ({len(holders)} claim it)")
                self._load_target = holders[0]
            try:
                return await send(self._load_target)
            except Exception:
                self._load_target = None
                raise
        # Each client sticks to one member and moves to the next after an error, as a client with several
        # endpoints does.
        services = self.subject.services
        index = self._client_member.setdefault(client, client % len(services))
        try:
            return await send(services[index])
        except Exception:
            self._client_member[client] = (index + 1) % len(services)
            raise

    async def load_op(self, client: int, seq: int, timeout: float) -> None:
        # The probes of the `load` list are cycled by sequence number.
        probe = self.subject.spec.load[seq % len(self.subject.spec.load)]
        await self._to_target(client, timeout, lambda service: self.run(probe, service, seq, timeout))

    # -- data operations (`load: {read, write, cas}`) ---------------------------------------------------------------

    async def _operation(self, f: str, client: int, fields: dict, timeout: float, parse: Callable[[Answer], T]) -> T:
        """Send the load's operation `f` and `parse` its answer; any error moves the client on, as for probes."""
        op = getattr(self.subject.spec.load, f)

        async def send(service: str) -> T:
            try:
                answer = await self.answer(op, service, {**fields, "service": service}, timeout, whole=True)
            except (ConnectionRefusedError, httpx.ConnectError) as exc:  # refused: nothing was sent
                raise NotApplied(describe(exc)) from exc
            return parse(answer)

        return await self._to_target(client, timeout, send)

    def _reading(self, answer: Answer) -> Reading:
        op = self.subject.spec.load.read
        if op.nothing is not None and re.search(op.nothing, answer.text):
            return Reading(None)
        if answer.wrong is not None:
            raise ProbeFailed(f"read: {answer.wrong}")
        found = re.search(op.value, answer.text)
        if found is None:
            raise ProbeFailed(f"read: answer {answer.text.strip()[:80]!r} does not match value {op.value!r}")
        return Reading(found.group(1) if found.re.groups else found.group(0))

    def _applied(self, f: str) -> Callable[[Answer], None]:
        """Whether a write or cas took effect: `mismatch` says a cas found another value (an answer, no error),
        `not_applied` that it certainly did not, else `expect` that it did; any other answer leaves it unknown."""
        op = getattr(self.subject.spec.load, f)

        def parse(answer: Answer) -> None:
            if op.mismatch is not None and re.search(op.mismatch, answer.text):
                raise CompareFailed()
            if op.not_applied is not None and re.search(op.not_applied, answer.text):
                raise NotApplied(f"{f}: {answer.text.strip()[:80]!r} (not applied)")
            if answer.wrong is not None:
                raise ProbeFailed(f"{f}: {answer.wrong}")

        return parse

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        return await self._operation("read", client, {"key": key}, timeout, self._reading)

    async def write(self, client: int, key: str, value: str, timeout: float) -> None:
        await self._operation("write", client, {"key": key, "value": value}, timeout, self._applied("write"))

    async def cas(self, client: int, key: str, expected: str, new: str, timeout: float) -> None:
        await self._operation("cas", client, {"key": key, "expected": expected, "new": new}, timeout,
                              self._applied("cas"))
