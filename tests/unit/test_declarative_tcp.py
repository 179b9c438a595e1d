"""A folder subject's TCP probe against a tiny server on 127.0.0.1 that keeps its connection open, as Redis does:
the probe must decide as soon as the answer has arrived, not wait out its timeout."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from subjects.declarative.probes import ProbeFailed, run_tcp
from subjects.declarative.spec import TcpProbe

# What a Redis replica answers to ROLE: no "master" in it.
REPLICA_ROLE = b"*5\r\n$5\r\nslave\r\n$6\r\nredis1\r\n:6379\r\n$9\r\nconnected\r\n:1234\r\n"
# Longer than any probe below can take when it decides on the answer: reaching it is the bug.
TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def server(*chunks: bytes, pause_s: float = 0.0):
    """Answers every line it reads with `chunks`, `pause_s` apart, and never closes the connection."""

    async def handle(reader, writer):
        with contextlib.suppress(ConnectionError):
            while await reader.readline():
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
        with pytest.raises(ProbeFailed, match="does not match 'master'"):
            await run_tcp(port, tcp(), "redis2", 0, TIMEOUT_S)
