"""Running one probe of a subject file against one member, by kind: an HTTP request or a TCP exchange with its
published port, or a command inside its container. A probe that does not pass raises `ProbeFailed`."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from subjects.base import Members
from subjects.declarative.spec import ExecProbe, HttpProbe, TcpProbe

def _fill(text: str, seq: int, service: str) -> str:
    return text.format(seq=seq, key=seq % 128, service=service)


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



async def run_http(http: httpx.AsyncClient, port: int, probe: HttpProbe, service: str, seq: int,
                   timeout: float) -> None:
    expect = probe.expect
    r = await http.request(
        probe.method, f"http://127.0.0.1:{port}{_fill(probe.path, seq, service)}",
        content=_fill(probe.body, seq, service) if probe.body is not None else None,
        headers=probe.headers, timeout=timeout)
    if r.status_code not in expect.status:
        raise ProbeFailed(f"HTTP {r.status_code}")
    if expect.json_fields:
        body = r.json()
        for path, want in expect.json_fields.items():
            got = _json_path(body, path)
            if got != want:
                raise ProbeFailed(f"{path} is {got!r}, expected {want!r}")


async def run_tcp(port: int, probe: TcpProbe, service: str, seq: int, timeout: float) -> None:
    expect = probe.expect
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if probe.send is not None:
                writer.write(_fill(probe.send, seq, service).encode())
                await writer.drain()
            if expect.output is not None:
                seen = b""
                while not re.search(expect.output, seen.decode(errors="replace")):
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ProbeFailed(f"answer {seen[:80]!r} does not match {expect.output!r}")
                    seen += chunk
        finally:
            writer.close()


async def run_exec(members: Members, probe: ExecProbe, service: str, seq: int, timeout: float) -> None:
    expect = probe.expect
    result = await members.exec(service, [_fill(a, seq, service) for a in probe.command], timeout)
    if result.exit_code != expect.exit_code:
        raise ProbeFailed(f"exit code {result.exit_code}: {result.output.strip()[-120:]}")
    if expect.output is not None and not re.search(expect.output, result.output):
        raise ProbeFailed(f"output {result.output.strip()[-80:]!r} does not match {expect.output!r}")
