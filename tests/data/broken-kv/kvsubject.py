"""The broken key-value server's data operations, for the safety checkers: a subject folder's `hook`.

With BROKEN_KV_READS=stale in the worker's environment, reads go to the server's replica that lags one write behind.
"""

from __future__ import annotations

import os

import httpx

from subjects import CompareFailed, NotApplied, Reading
from subjects.declarative import DeclarativeSession, DeclarativeSubject


class KvSession(DeclarativeSession):
    model = "cas-register"
    token_name = "revision"

    def _url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port('kv1', None)}/kv/{key}"

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        stale = os.environ.get("BROKEN_KV_READS") == "stale"
        r = await self.http.get(self._url(key), params={"stale": "1"} if stale else None, timeout=timeout)
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

    async def cas(self, client: int, key: str, expected: str, new: str, timeout: float) -> int:
        url = f"http://127.0.0.1:{self.port('kv1', None)}/cas/{key}"
        try:
            r = await self.http.post(url, json={"expected": expected, "new": new}, timeout=timeout)
        except httpx.ConnectError as exc:
            raise NotApplied(str(exc)) from exc
        if r.status_code == 409:  # the key held something else: nothing changed
            raise CompareFailed()
        r.raise_for_status()
        return r.json()["rev"]


class KvSubject(DeclarativeSubject):
    session_class = KvSession
