"""The HTTP client a subject's load goes through: JSON POSTs over kept-alive HTTP/1.1 connections to its members.

Why not aiohttp, as before: the load generator's own CPU is what limits it on a busy host, and every CPU second it
spends is taken from the subject it measures. aiohttp spent 0.091 CPU s per 1,000 requests against a trivial local
server, most of it in `ClientSession._request` (cookies, tracing, redirects, URL objects, timeouts per request: 58 %
in cProfile, session 12), which is more than the benchmark's whole aim for the load generator (0.08, beside wrk at
0.024). Parsing a response is what a library does well, and it does it here: `httptools` (llhttp, the parser
uvicorn uses). What is left around it is a pool of connections, the request line and its headers: a load of local
JSON POSTs needs nothing else (no TLS, no proxies, no redirects, no cookies). Its JSON is `orjson`'s, and a request's
deadline is a bare timer: with the stdlib's `json` and an `asyncio.timeout` per request, the generator spent 0.137-0.169
CPU s per 1,000 operations against one etcd member, and 0.107-0.133 with these (session 27, bench/loadgen.py's
closed loop, the two alternating over 4 rounds).

A failure to connect is `CouldNotConnect`: nothing was sent, so an operation that met it did not happen. A request
that fails after it was written (a reset, a timeout) may have been applied: the caller records it as unknown.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httptools
import orjson


class CouldNotConnect(ConnectionError):
    """No connection to the member: the request was not sent. Its text says why, in a violation's words."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future | None = None
        self._body: list[bytes] = []
        self.reusable = False

    # -- asyncio.Protocol ------------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        self._fail(exc or ConnectionResetError("the member closed the connection"))

    # -- httptools callbacks ---------------------------------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self._parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))

    # -------------------------------------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    async def send(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        """Write the request; its answer within `timeout` seconds, or TimeoutError (the connection is then closed:
        an answer may still be on its way)."""
        self._body = []
        self.reusable = False
        loop = asyncio.get_running_loop()
        self._answer = answer = loop.create_future()
        self.transport.write(request)
        # A bare timer, not `asyncio.timeout`: that context manager took about 5 % of the generator's CPU under
        # cProfile (session 27), and a request has nothing else to cancel.
        timer = loop.call_later(timeout, self._expire)
        try:
            return await answer
        except BaseException:
            self.close()  # a timeout or a cancel mid-answer leaves the connection in an unknown state
            raise
        finally:
            timer.cancel()

    def _expire(self) -> None:
        self._fail(TimeoutError())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LoadClient:
    """JSON POSTs to members by URL (`http://127.0.0.1:PORT/path`), each over an idle kept-alive connection to that
    member or a new one. A connection that failed or was interrupted (a timeout) is closed, never reused."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, int, bytes]] = {}  # url -> host, port, request line and fixed headers

    def _target(self, url: str) -> tuple[str, int, bytes]:
        if (known := self._targets.get(url)) is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"the load client speaks plain http to a member, not {url!r}")
            port = parts.port or 80
            head = (f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                    f"Host: {parts.hostname}:{port}\r\nContent-Type: application/json\r\n").encode()
            known = self._targets[url] = (parts.hostname, port, head)
        return known

    async def post_json(self, url: str, body: dict, timeout: float) -> tuple[int, dict]:
        """(HTTP status, the answer's JSON: {} for an empty body) within `timeout` seconds."""
        host, port, head = self._target(url)
        payload = orjson.dumps(body)
        request = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(payload), payload)
        if (conn := self._idle_connection(host, port)) is None:
            began = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    conn = await self._connect(host, port)
            except TimeoutError:
                raise CouldNotConnect(f"no connection within {timeout:g}s") from None
            timeout -= time.monotonic() - began  # the request's time is what the connection left of it
        status, raw = await conn.send(request, timeout)
        if conn.reusable:
            self._idle.setdefault((host, port), []).append(conn)
        else:
            conn.close()
        return status, orjson.loads(raw) if raw else {}

    def _idle_connection(self, host: str, port: int) -> _Connection | None:
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port)
        except ConnectionRefusedError as exc:
            raise CouldNotConnect("connection refused") from exc
        except OSError as exc:
            raise CouldNotConnect(exc.strerror or str(exc)) from exc
        return conn

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
