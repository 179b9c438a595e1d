"""The broken key-value server's data operations, for the safety checkers: a subject folder's `hook`."""

from __future__ import annotations

import httpx

from subjects import NotApplied, Reading
from subjects.declarative import DeclarativeSession, DeclarativeSubject


class KvSession(DeclarativeSession):
    model = "register"
    token_name = "revision"

    def _url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port('kv1', None)}/kv/{key}"

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        r = await self.http.get(self._url(key), timeout=timeout)
        if r.status_code == 404:
            return Reading(None)
        r.raise_for_status()
        body = r.json()
        return Reading(body["value"], body["rev"])

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        try:
            r = await self.http.put(self._url(key), content=value, timeout=timeout)
        except httpx.ConnectError as exc:  # refused: nothing was sent
            raise NotApplied(str(exc)) from exc
        r.raise_for_status()
        return r.json()["rev"]


class KvSubject(DeclarativeSubject):
    session_class = KvSession
