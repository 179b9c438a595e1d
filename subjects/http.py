"""Helpers for subjects that speak HTTP: one client configuration, a lean JSON client for load, and failures
described in a few words."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from urllib.parse import urlsplit

import httpx


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs ~25 ms of CPU, which every session (one per load window, one per
    # detection) would otherwise pay - straight into time-to-detect, and a real cost with many subjects at once.
    return ssl.create_default_context()


def http_client() -> httpx.AsyncClient:
    # Local traffic only; never pick up a proxy from the environment.
    return httpx.AsyncClient(trust_env=False, verify=_tls_context(), limits=httpx.Limits(max_connections=64))


class Unreachable(ConnectionError):
    """The connection could not be opened: nothing was sent."""


class JsonPoster:
    """POST a JSON body and read the JSON answer, over plain-HTTP/1.1 keep-alive connections on asyncio streams.

    For load, where the generator's own CPU is what limits it on a busy host: httpx spends about 1 ms of CPU per
    request in its connection pool and anyio, some ten times what the request costs on a bare stream (measured
    with bench/loadgen.py, which compares the generator with wrk). Checks keep httpx. http:// only; answers framed
    by Content-Length or chunked. Idle connections are kept per address and reused unless the server closed them.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def post(self, url: str, path: str, body: dict, timeout: float) -> tuple[int, dict]:
        """(HTTP status, decoded JSON answer). Raises Unreachable when no connection could be opened, TimeoutError
        past `timeout` (for the whole exchange), OSError/IncompleteReadError/ValueError on a broken answer."""
        address = _address(url)
        payload = json.dumps(body).encode()
        request = (f"POST {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        async with asyncio.timeout(timeout):
            conn = self._reuse(address)
            if conn is None:
                try:
                    conn = await asyncio.open_connection(*address)
                except OSError as exc:
                    raise Unreachable(str(exc)) from exc
            reader, writer = conn
            try:
                writer.write(request)
                status, headers = await _head(reader)
                data, reusable = await _body(reader, headers)
            except BaseException:  # timed out, cancelled or broken: the connection's state is unknown
                writer.close()
                raise
        if reusable and headers.get("connection", "").lower() != "close":
            self._idle.setdefault(address, []).append(conn)
        else:
            writer.close()
        return status, json.loads(data)

    def _reuse(self, address: tuple[str, int]):
        idle = self._idle.get(address)
        while idle:
            reader, writer = idle.pop()
            if not (reader.at_eof() or writer.is_closing()):  # the server did not close it meanwhile
                return reader, writer
            writer.close()
        return None

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()


@functools.lru_cache(maxsize=64)
def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"JsonPoster speaks plain http only, not {url}")
    return parts.hostname, parts.port or 80


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[bytes, bool]:
    """The answer's body, and whether the connection can carry another request."""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"])), True
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
            pass
        return b"".join(chunks), True
    return await reader.read(), False  # framed by the connection's end


def describe(exc: BaseException) -> str:
    """A failed call in the words a violation uses: "unreachable (connection refused)", "no answer (timeout)"."""
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError, Unreachable)):
        return "unreachable (connection refused)"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "no answer (timeout)"
    return f"{type(exc).__name__}: {exc}"[:200]
