"""The load generator's HTTP client against a real local HTTP server (aiohttp's): kept-alive connections, what a
failure to connect says, and that an interrupted connection is never reused."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web

from subjects.http import describe
from subjects.http_load import CouldNotConnect, LoadClient


@contextlib.asynccontextmanager
async def server(slow_s: float = 0.0):
    """A JSON echo on 127.0.0.1; `peers` collects the client port of every request (one per connection)."""
    peers: list[int] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])
        body = await request.json()
        if body.get("slow"):
            await asyncio.sleep(slow_s)
        if body.get("status"):
            return web.json_response({"message": "refused by the handler"}, status=body["status"])
        if body.get("close"):
            return web.json_response({"echo": body}, headers={"Connection": "close"})
        return web.json_response({"echo": body, "path": request.path})

    app = web.Application()
    app.router.add_post("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", peers
    finally:
        await runner.cleanup()


async def test_answers_come_back_as_json_over_one_kept_alive_connection():
    client = LoadClient()
    async with server() as (url, peers):
        for i in range(5):
            status, answer = await client.post_json(f"{url}/v3/kv/put", {"n": i}, timeout=2)
            assert status == 200 and answer == {"echo": {"n": i}, "path": "/v3/kv/put"}
        status, answer = await client.post_json(f"{url}/x", {"status": 503}, timeout=2)
        assert status == 503 and answer == {"message": "refused by the handler"}
    await client.close()
    assert len(set(peers)) == 1, peers  # every request went over the same connection


async def test_a_member_that_refuses_connections_is_could_not_connect_in_a_violations_words():
    async with server() as (url, _):
        pass  # the port is closed again: nothing listens there now
    with pytest.raises(CouldNotConnect) as err:
        await LoadClient().post_json(f"{url}/v3/kv/put", {}, timeout=2)
    assert describe(err.value) == "unreachable (connection refused)"


async def test_a_timed_out_request_is_a_timeout_and_its_connection_is_not_reused():
    client = LoadClient()
    async with server(slow_s=1.0) as (url, peers):
        await client.post_json(url, {"n": 0}, timeout=2)
        with pytest.raises(TimeoutError):  # sent, so it may have been applied: not CouldNotConnect
            await client.post_json(url, {"slow": True}, timeout=0.2)
        status, answer = await client.post_json(url, {"n": 2}, timeout=2)
        assert status == 200 and answer["echo"] == {"n": 2}
    await client.close()
    assert peers[0] == peers[1] != peers[2], peers  # a fresh connection after the interrupted one


async def test_a_connection_the_member_closes_is_replaced():
    client = LoadClient()
    async with server() as (url, peers):
        await client.post_json(url, {"close": True}, timeout=2)
        status, _ = await client.post_json(url, {"n": 1}, timeout=2)
        assert status == 200
    await client.close()
    assert peers[0] != peers[1], peers


async def test_requests_in_parallel_each_get_their_own_answer():
    client = LoadClient()
    async with server() as (url, _):
        answers = await asyncio.gather(*(client.post_json(url, {"n": i}, timeout=2) for i in range(20)))
    await client.close()
    assert [a["echo"]["n"] for _, a in answers] == list(range(20))


async def test_only_plain_http_to_a_member_is_spoken():
    with pytest.raises(ValueError, match="plain http"):
        await LoadClient().post_json("https://127.0.0.1:1/x", {}, timeout=1)


async def test_a_request_cancelled_mid_answer_does_not_leave_its_answer_to_the_next_one():
    """A load window cancelled by its run (or a deadline around the request) must not hand its connection, with
    the cancelled request's answer still to come, to the next request."""
    client = LoadClient()
    async with server(slow_s=0.3) as (url, peers):
        await client.post_json(url, {"n": 0}, timeout=2)
        slow = asyncio.create_task(client.post_json(url, {"slow": True}, timeout=2))
        await asyncio.sleep(0.1)  # written, its answer not back yet
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        status, answer = await client.post_json(url, {"n": 2}, timeout=2)
        assert status == 200 and answer["echo"] == {"n": 2}
    await client.close()
    assert peers[0] == peers[1] != peers[2], peers
