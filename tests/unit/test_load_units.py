"""The load generator's parts that need no cluster: what the etcd session's load client records for each kind of
answer (against tiny HTTP servers on 127.0.0.1), and where a window's schedule starts when it carries on the
previous one's."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone


from activities.load import CATCH_UP_LIMIT_S, _first_due, one_op
from durable_chaos.contracts import LoadRequest, SubjectRef
from durable_chaos.safety.availability import availability
from subjects.etcd import EtcdSession

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


async def test_etcd_load_answers_are_recorded_as_the_client_saw_them():
    """Through the etcd session's load client and `one_op`, as the load generator records them: an answer is `ok`
    with its revision, an error status is `info` (the write may have been applied), silence past the timeout is
    `info`, and a refused connection is `fail` (nothing was sent)."""
    server, url, connections = await _server(
        lambda path: _json(b'{"header":{"revision":"7"}}') if path == "/v3/kv/put"
        else _json(b'{"message":"etcdserver: too many requests"}', "503 Service Unavailable"))
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    sessions = {name: EtcdSession({"etcd1": address}) for name, address in [
        ("answers", url), ("silent", f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"),
        ("refused", f"http://127.0.0.1:{closed_port}")]}
    try:
        ops = [await one_op(sessions["answers"], "write", 0, "k", "v", n, 2, time.time_ns()) for n in range(3)]
        assert [(op.outcome, op.token) for op in ops] == [("ok", 7)] * 3
        assert len(connections) == 1  # kept alive: the load opens no connection per operation
        busy = await one_op(sessions["answers"], "read", 0, "k", None, 0, 2, time.time_ns())
        assert busy.outcome == "fail" and "HTTP 503: etcdserver: too many requests" in busy.error
        silence = await one_op(sessions["silent"], "write", 0, "k", "v", 0, 0.2, time.time_ns())
        assert silence.outcome == "info"
        refused = await one_op(sessions["refused"], "write", 0, "k", "v", 0, 2, time.time_ns())
        assert refused.outcome == "fail" and refused.error == "unreachable (connection refused)"
    finally:
        for session in sessions.values():
            await session.aclose()
        server.close()
        silent.close()


async def test_a_swap_etcd_refuses_is_an_answer_not_an_error():
    """etcd's transaction answers `succeeded` (swapped) or leaves it out (the key held another value): the second
    is the outcome `fail` (it did not take effect) with no error, which the error rate does not count."""
    server, url, _ = await _server(lambda path: _json(b'{"header":{"revision":"9"}}') if path.startswith("/other")
                                   else _json(b'{"header":{"revision":"9"},"succeeded":true}'))
    session = EtcdSession({"etcd1": url})
    try:
        swapped = await one_op(session, "cas", 0, "k", ["a", "b"], 0, 2, time.time_ns())
        assert (swapped.outcome, swapped.token, swapped.served) == ("ok", 9, True)
        session._urls = [url + "/other"]  # the same server, answering without `succeeded`
        refused = await one_op(session, "cas", 0, "k", ["a", "c"], 0, 2, time.time_ns())
        assert (refused.outcome, refused.error, refused.served, refused.value) == ("fail", None, True, ["a", "c"])
        assert availability([swapped, refused]).error_rate == 0
    finally:
        await session.aclose()
        server.close()


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
