"""The load generator's parts that need no cluster: the lean JSON client the etcd session loads through (against a
tiny HTTP server on 127.0.0.1), and where a window's schedule starts when it carries on the previous one's."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from activities.load import CATCH_UP_LIMIT_S, _first_due
from contracts import LoadRequest, SubjectRef
from subjects.http import JsonPoster, Unreachable, describe

S = 1_000_000_000


async def _server(answer, close_after_answer: bool = False):
    """An HTTP/1.1 server on a free local port; `answer(path)` gives the raw response bytes."""
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            writer.write(answer(head.split(b" ")[1].decode()))
            await writer.drain()
            if close_after_answer:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


def _json(body: bytes, status: str = "200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(), len(body), body)


async def test_json_poster_reuses_one_connection_for_consecutive_requests():
    server, url, connections = await _server(lambda path: _json(b'{"header":{"revision":"7"},"path":"%s"}'
                                                                % path.encode()))
    poster = JsonPoster()
    try:
        for _ in range(3):
            status, answer = await poster.post(url, "/v3/kv/put", {"key": "a2V5"}, timeout=2)
            assert status == 200 and answer == {"header": {"revision": "7"}, "path": "/v3/kv/put"}
        assert len(connections) == 1
    finally:
        poster.close()
        server.close()


async def test_json_poster_reads_chunked_answers_and_error_statuses():
    def answer(path):
        if path == "/chunked":
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"
        return _json(b'{"message":"etcdserver: too many requests"}', "503 Service Unavailable")

    server, url, _ = await _server(answer)
    poster = JsonPoster()
    try:
        assert await poster.post(url, "/chunked", {}, timeout=2) == (200, {"a": 1})
        assert await poster.post(url, "/busy", {}, timeout=2) == (503, {"message": "etcdserver: too many requests"})
    finally:
        poster.close()
        server.close()


async def test_json_poster_opens_a_new_connection_when_the_server_closed_the_idle_one():
    server, url, connections = await _server(lambda path: _json(b"{}"), close_after_answer=True)
    poster = JsonPoster()
    try:
        for _ in range(3):
            assert await poster.post(url, "/x", {}, timeout=2) == (200, {})
            await asyncio.sleep(0.01)  # the server's close reaches us
        assert len(connections) == 3
    finally:
        poster.close()
        server.close()


async def test_json_poster_says_unreachable_when_refused_and_times_out_on_silence():
    server, url, _ = await _server(lambda path: b"")
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    poster = JsonPoster()
    with pytest.raises(Unreachable) as refused:
        await poster.post(f"http://127.0.0.1:{port}", "/x", {}, timeout=2)
    assert describe(refused.value) == "unreachable (connection refused)"

    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    try:
        with pytest.raises(TimeoutError):
            await poster.post(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}", "/x", {}, timeout=0.2)
    finally:
        poster.close()
        silent.close()


def _req(due_from_ns: int | None, rate: float = 100, concurrency: int = 16) -> LoadRequest:
    due_from = None if due_from_ns is None else datetime.fromtimestamp(due_from_ns / S, tz=timezone.utc)
    return LoadRequest(subject=SubjectRef(name="etcd"), window_s=1, concurrency=concurrency, check_timeout_s=0.5,
                       rate=rate, due_from=due_from)


def test_a_window_carries_on_the_previous_schedule_and_catches_up_at_most_half_the_cap():
    now = 1_800_000_000 * S
    assert _first_due(_req(None), now) == now  # the first window
    assert _first_due(_req(now - S // 20), now) == now - S // 20  # 50 ms between windows: 5 operations caught up
    # 1 s between windows at 100 ops/s is 100 operations due: only 8 (half of 16) are caught up.
    assert _first_due(_req(now - S), now) == now - 8 * S // 100
    # Not consecutive (a lost window, a worker restart) or from the future (another worker's clock): start afresh.
    assert _first_due(_req(now - int((CATCH_UP_LIMIT_S + 1) * S)), now) == now
    assert _first_due(_req(now + S), now) == now
