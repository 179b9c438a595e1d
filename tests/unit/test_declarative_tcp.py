"""A folder subject's TCP probe against a tiny server on 127.0.0.1 that keeps its connection open, as Redis does:
the probe must decide as soon as the answer has arrived, not wait out its timeout."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from subjects.declarative.probes import Answer, tcp_answer
from subjects.declarative.spec import TcpProbe

# What a Redis replica answers to ROLE: no "master" in it.
REPLICA_ROLE = b"*5\r\n$5\r\nslave\r\n$6\r\nredis1\r\n:6379\r\n$9\r\nconnected\r\n:1234\r\n"
# Longer than any probe below can take when it decides on the answer: reaching it is the bug.
TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def server(*chunks: bytes, pause_s: float = 0.0):
    """Answers what it is sent first with `chunks`, `pause_s` apart, and never closes the connection."""

    async def handle(reader, writer):
        with contextlib.suppress(ConnectionError):
            await reader.read(4096)
            for i, chunk in enumerate(chunks):
                if i:
                    await asyncio.sleep(pause_s)
                writer.write(chunk)
                await writer.drain()
            await asyncio.sleep(3600)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


def tcp(**fields) -> TcpProbe:
    return TcpProbe.model_validate({"kind": "tcp", "send": "ROLE\r\n", "expect": {"output": "master"}, **fields})


async def test_an_answer_that_does_not_match_fails_the_probe_once_it_has_arrived():
    async with server(REPLICA_ROLE) as port:
        answer = await tcp_answer(port, tcp(), {}, TIMEOUT_S)
    assert answer.wrong == f"answer {REPLICA_ROLE!r} does not match 'master'"


@pytest.mark.parametrize("reply", ["line", "resp"])
async def test_a_probe_passes_as_soon_as_its_answer_matches(reply):
    async with server(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n") as port:
        assert (await tcp_answer(port, tcp(reply=reply), {}, TIMEOUT_S)).wrong is None


async def test_a_resp_answer_split_in_parts_is_read_to_its_end():
    # A primary's ROLE answer whose "master" comes in a second part: `line` would stop after the first.
    async with server(b"*3\r\n", b"$6\r\nmaster\r\n:0\r\n*0\r\n", pause_s=0.05) as port:
        assert (await tcp_answer(port, tcp(reply="resp"), {}, TIMEOUT_S)).wrong is None


@pytest.mark.parametrize("sent, parts, text", [
    # GET of an empty key, and of a key holding a value sent in two parts
    ("GET k\r\n", [b"$-1\r\n"], "$-1\r\n"),
    ("GET k\r\n", [b"$5\r\nab", b"cde\r\n"], "$5\r\nabcde\r\n"),
    # three commands (inline, and one in RESP's own encoding): three replies, the last in a part of its own
    ("MULTI\r\nSET k v\r\n*1\r\n$4\r\nEXEC\r\n", [b"+OK\r\n+QUEUED\r\n", b"*1\r\n+OK\r\n"],
     "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"),
    # RESP3: a map and a set
    ("HELLO 3\r\n", [b"%1\r\n+a\r\n~2\r\n:1\r\n", b"_\r\n"], "%1\r\n+a\r\n~2\r\n:1\r\n_\r\n"),
])
async def test_an_operation_reads_the_whole_resp_answer_however_it_is_split(sent, parts, text):
    async with server(*parts, pause_s=0.05) as port:
        op = tcp(send=sent, reply="resp", expect={})
        assert await tcp_answer(port, op, {}, TIMEOUT_S, whole=True) == Answer(text)
