"""The load generator benchmark's floor side (bench/loadgen.py `_floor`): a bare Python client beside which the
product's per-operation CPU is read. It must count answers as wrk's script counts them, or the floor is not one."""

from __future__ import annotations

from bench.loadgen import _floor
from tests.unit.test_load_units import _json, _server


async def test_the_floor_counts_only_answers_with_a_header_as_wrk_does_and_keeps_every_connection_busy():
    seen = []

    def answer(path: str) -> bytes:
        seen.append(path)
        # Every third answer is a 200 without a header: the gateway's way of failing (the session rejects it too).
        return _json(b'{"error":"etcdserver: too many requests"}') if len(seen) % 3 == 0 else _json(
            b'{"header":{"revision":"7"}}')

    server, url, connections = await _server(answer)
    try:
        r = await _floor(url, 0.3, 4, 2.0)
    finally:
        server.close()
    assert len(connections) == 4
    assert r["ok"] + r["errors"] == len(seen) > 20
    assert abs(r["errors"] - len(seen) // 3) <= 1
    assert {"/v3/kv/put", "/v3/kv/range"} == set(seen)
    assert r["cpu_s"] > 0 and r["wall_s"] >= 0.3
