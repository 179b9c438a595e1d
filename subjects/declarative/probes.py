"""Running one probe or data operation of a subject file against one member, by kind: an HTTP request or a TCP
exchange with its published port, or a command inside its container. Each gives an `Answer`: the text the member
answered and, when it is not what the probe's `expect` says, why not. A probe that does not pass raises
`ProbeFailed`."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx

from subjects.base import Members
from subjects.declarative.spec import ExecProbe, HttpProbe, TcpProbe


def fill(text: str, fields: dict[str, Any]) -> str:
    """A template of the subject file with its placeholders ({key}, {value}...) filled in."""
    return text.format(**fields)


def _json_path(body: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


class ProbeFailed(Exception):
    """One probe did not pass on one member; the message is the violation's detail."""


@dataclass(frozen=True)
class Answer:
    text: str  # tcp: the reply; exec: the output; http: the body
    wrong: str | None = None  # why it is not what the probe's `expect` says; None when it is


async def http_answer(http: httpx.AsyncClient, port: int, probe: HttpProbe, fields: dict[str, Any],
                      timeout: float) -> Answer:
    expect = probe.expect
    r = await http.request(
        probe.method, f"http://127.0.0.1:{port}{fill(probe.path, fields)}",
        content=fill(probe.body, fields) if probe.body is not None else None,
        headers=probe.headers, timeout=timeout)
    if r.status_code not in expect.status:
        return Answer(r.text, f"HTTP {r.status_code}")
    if expect.json_fields:
        body = r.json()
        for path, want in expect.json_fields.items():
            got = _json_path(body, path)
            if got != want:
                return Answer(r.text, f"{path} is {got!r}, expected {want!r}")
    return Answer(r.text)


# -- TCP: when has the whole answer arrived? --------------------------------------------------------------------------
# A server that keeps its connections open (Redis) never says "that was all" by closing: the probe must know where
# an answer ends (`reply`), or it would read on until its timeout whenever the answer is not the one expected.


def _resp_end(buf: bytes, pos: int) -> int | None:
    """Where the RESP value (Redis's protocol, 2 or 3) starting at `pos` ends; None while it is incomplete."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind = buf[pos]
    if kind not in b"$!=*~>%":  # a simple value: +OK, -ERR..., :1, _, #t, ,1.5, (1234
        return eol + 2
    try:
        n = int(buf[pos + 1:eol])
    except ValueError:  # not RESP after all: take the line as the whole value
        return eol + 2
    if kind in b"$!=":  # bulk string, bulk error, verbatim string: a length, then the bytes
        end = eol + 2 + n + 2 if n >= 0 else eol + 2
        return end if len(buf) >= end else None
    pos = eol + 2
    for _ in range(max(n, 0) * (2 if kind == ord("%") else 1)):  # an aggregate's elements (a map's: pairs)
        pos = _resp_end(buf, pos) if pos < len(buf) else None
        if pos is None:
            return None
    return pos


def _resp_commands(sent: bytes) -> int:
    """How many commands `sent` holds, so how many replies a Redis server sends back: RESP arrays, or inline
    commands one per line (blank lines get no reply)."""
    count, pos = 0, 0
    while pos < len(sent):
        if sent[pos] == ord("*"):
            end = _resp_end(sent, pos) or len(sent)
        else:
            end = sent.find(b"\n", pos) + 1 or len(sent)
            if not sent[pos:end].strip():
                pos = end
                continue
        count, pos = count + 1, end
    return max(count, 1)


def _complete(seen: bytes, reply: str, replies: int) -> bool:
    if reply == "line":
        return b"\n" in seen
    if reply == "resp":
        pos = 0
        for _ in range(replies):
            pos = _resp_end(seen, pos) if pos < len(seen) else None
            if pos is None:
                return False
        return True
    return False  # "close": only the server closing the connection ends the answer


async def tcp_answer(port: int, probe: TcpProbe, fields: dict[str, Any], timeout: float,
                     whole: bool = False) -> Answer:
    """Send and read the answer until it is complete (`probe.reply`) or, unless `whole`, `expect.output` matches
    it: a probe decides as soon as it can, an operation parses the whole answer. Without `send` or `expect.output`
    on a probe, connecting is the test."""
    expect = probe.expect
    sent = fill(probe.send, fields).encode() if probe.send is not None else b""
    replies = _resp_commands(sent)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if sent:
                writer.write(sent)
                await writer.drain()
            if expect.output is None and not whole:
                return Answer("")
            seen = b""
            while True:
                text = seen.decode(errors="replace")
                if not whole and re.search(expect.output, text):
                    return Answer(text)
                if _complete(seen, probe.reply, replies):
                    break
                chunk = await reader.read(4096)
                if not chunk:
                    if whole and probe.reply != "close":
                        raise ConnectionError(f"connection closed before the answer was complete: {seen[:80]!r}")
                    break
                seen += chunk
        finally:
            writer.close()
    if expect.output is not None and not re.search(expect.output, text):
        return Answer(text, f"answer {seen[:80]!r} does not match {expect.output!r}")
    return Answer(text)


async def exec_answer(members: Members, probe: ExecProbe, service: str, fields: dict[str, Any],
                      timeout: float) -> Answer:
    expect = probe.expect
    result = await members.exec(service, [fill(a, fields) for a in probe.command], timeout)
    if result.exit_code != expect.exit_code:
        return Answer(result.output, f"exit code {result.exit_code}: {result.output.strip()[-120:]}")
    if expect.output is not None and not re.search(expect.output, result.output):
        return Answer(result.output, f"output {result.output.strip()[-80:]!r} does not match {expect.output!r}")
    return Answer(result.output)
