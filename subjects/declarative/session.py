"""The session of a subject read from a folder: its probes are the invariants, evaluated on every member, its role
probes say who holds each role, and its load operations are cycled by sequence number."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import httpx

from durable_chaos.contracts import CheckResult, MemberHealth
from subjects.base import Members, Session, SubjectInstance
from subjects.checks import ask_members, member_violations
from subjects.declarative.probes import ProbeFailed, run_exec, run_http, run_tcp
from subjects.declarative.spec import ExecProbe, HttpProbe, RoleSpec, TcpProbe
from subjects.http import describe, http_client

if TYPE_CHECKING:  # the subject's module imports this one, for `session_class`
    from subjects.declarative.subject import DeclarativeSubject


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
        if isinstance(probe, HttpProbe):
            await run_http(self.http, self.port(service, probe.port), probe, service, seq, timeout)
        elif isinstance(probe, TcpProbe):
            await run_tcp(self.port(service, probe.port), probe, service, seq, timeout)
        else:
            await run_exec(self.members, probe, service, seq, timeout)

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
        members, _ = asked
        violations = member_violations(members)
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

