"""The nats subject's session: health and roles from the monitor endpoints, traffic through one NATS connection
(keys are subjects of a stream of their own, a write an acknowledged publish, a read the subject's last message)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone

import nats.errors
import nats.js.errors

from durable_chaos.contracts import CheckResult
from subjects.base import NotApplied, Reading, Session
from subjects.checks import ask_members, member_violations
from subjects.http import http_client
from subjects.nats.connection import KV_PREFIX, KV_STREAM, Connection, describe
from subjects.nats.monitor import View, invariants, member


class NatsSession(Session):
    model = "register"
    token_name = "stream sequence"
    gapless_tokens = True

    def __init__(self, client_urls: dict[str, str], monitor_urls: dict[str, str]):
        self.monitor_urls = monitor_urls
        self.http = http_client()
        self.nats = Connection(client_urls)

    async def _views(self, timeout: float) -> dict[str, View]:
        answers = await asyncio.gather(*(member(self.http, url, svc, timeout)
                                         for svc, url in self.monitor_urls.items()))
        return {m.service: view for m, view in answers if view is not None}

    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)

        async def publish() -> tuple[list[str], bool]:
            try:
                async with asyncio.timeout(timeout):
                    _, created = await self.nats.publish("chaos.probe", at.isoformat().encode(), timeout)
                return [], created
            except Exception as exc:  # noqa: BLE001 - a sick subject is a result, never an exception
                return [f"acknowledged publish failed: {describe(exc)}"], False

        # A leaderless stream often answers "no responders" at once: with `fail_fast`, a failed publish is as
        # certain a violation as a member that refuses.
        asked = await ask_members(
            at, (member(self.http, url, svc, timeout) for svc, url in self.monitor_urls.items()),
            lambda answer: answer[0], fail_fast, also=publish(), also_violations=lambda published: published[0])
        if isinstance(asked, CheckResult):  # failed fast
            return asked
        answers, (publish_violations, created) = asked
        members = [m for m, _ in answers]
        views = {m.service: view for m, view in answers if view is not None}
        roles, stream_violations = invariants(views, self.monitor_urls)
        if created:
            # The stream was just made by this check: its first election takes a few tens of milliseconds.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while stream_violations:
                        await asyncio.sleep(0.05)
                        roles, stream_violations = invariants(await self._views(timeout), self.monitor_urls)
        violations = member_violations(members) + stream_violations + publish_violations
        return CheckResult(at=at, ok=not violations, members=members, roles=roles, violations=violations)

    async def roles(self, timeout: float) -> dict[str, str]:
        # From the monitor endpoints alone: no publish, no stream creation.
        return invariants(await self._views(timeout), self.monitor_urls)[0]

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        # An acknowledged publish to the key's subject; the stream's sequence is the token. "No responders" means no
        # stream took the message (a leaderless stream), and a connection that never opened sent nothing: those
        # certainly did not happen. When the connected server dies, nats-py fails over to another at once.
        try:
            async with asyncio.timeout(timeout):
                return (await self.nats.publish(KV_PREFIX + key, value.encode(), timeout, stream=KV_STREAM))[0]
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoServersError) as exc:
            raise NotApplied(describe(exc)) from exc

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        # The key's last message, asked of the stream leader (not a `direct` get, which a lagging replica may answer).
        async with asyncio.timeout(timeout):
            nc = await self.nats.client(timeout)
            try:
                msg = await nc.jsm(timeout=timeout).get_last_msg(KV_STREAM, KV_PREFIX + key)
            except nats.js.errors.NotFoundError:
                return Reading(None)
            return Reading(msg.data.decode(), msg.seq)

    async def aclose(self) -> None:
        await self.nats.aclose()
        await self.http.aclose()
