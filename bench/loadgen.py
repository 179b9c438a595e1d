"""The load generator's own figures on a real etcd copy: its throughput beside wrk's, CPU per 1,000 operations, and
whether the open loop holds its rate.

Throughput beside wrk (a fair comparison, the same for both sides):
- same endpoint: one member's published port (etcd1 on 127.0.0.1); our session is the product's `EtcdSession`
  given that one endpoint, so neither side spreads over members;
- same requests: JSON POSTs to etcd's v3 gateway, half /v3/kv/put and half /v3/kv/range over 32 keys with base64
  keys and values (wrk runs bench/wrk_etcd.lua), and an answer counts only when it is HTTP 200 with a "header";
- same concurrency, same model: wrk keeps `concurrency` connections busy, each sending its next request when the
  answer comes (closed loop), on one thread (`wrk -t1`, at most one core, as our single asyncio loop). Ours runs
  `concurrency` clients, each calling the product's `one_op` (the session, the Op record) and the next when it
  returns: the same closed loop, so the figure is the generator's speed, not a rate we chose. Both sides run as a
  process of their own (ours on uvloop, as `python worker.py` runs), one after the other, the order rotating
  between rounds; a round's ratio is ours / wrk's and the median of the rounds' ratios is quoted (the machine is
  shared: pairs measured together share its noise).
- beside it, the product's open loop itself (`_open_loop`) asked for `OPEN_RATE`, more than it can send: the
  operations answered per second; the ones it did not send (concurrency cap reached) are not counted.
- and the floor of any Python generator here (`_floor`): the same loop on uvloop, `concurrency` connections each
  sending its next request when the answer comes, answers parsed by httptools as the product's client parses them,
  but the requests built once beforehand and nothing recorded (no JSON, no base64, no session, no `Op`). What ours
  spends above it is the product's own work per operation; what the floor spends above wrk is Python's.
CPU per 1,000 operations: the generating process's CPU (user + system) over the measured seconds, per 1,000
answered operations: ours from `time.process_time()` inside the process, wrk's from its rusage (whole process,
start-up included: a few milliseconds).

Open-loop rate: `run_load_window`, the activity itself (through `ActivityEnvironment`, no server), on the whole
copy (the product's session over all 3 members), `windows` one-second windows back to back at each rate, each
carrying on the previous one's schedule as the workflow chains them (`due_from`). Sent and answered rates are over
the wall time from the first window's start to the last one's end, so whatever the next window does not catch up
of the gap between windows (the tail of answers, writing the history part) counts against the rate; a workflow
adds a Temporal round trip per window, which the next window catches up the same way.

Up to wrk's rate: the product's open loop, as in the throughput rounds (wrk's member, wrk's requests, a process of
its own), asked for a half, three quarters and all of the rate wrk reached there (rounded down to 100), with
`open_concurrency` in flight at most: does it hold its rate up to what the member itself answers? At that rate a
closed loop's 16 in flight leave no room for a slower answer.

    python -m bench.loadgen closed|open|floor URL SECONDS CONCURRENCY TIMEOUT [RATE]   # one measurement, a JSON line
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import uvloop
from temporalio.testing import ActivityEnvironment

from activities.load import KEYS, _open_loop, one_op, run_load_window
from durable_chaos.safety.workloads import Registers
from durable_chaos.contracts import MAX_LOAD_RATE, LoadRequest, SubjectRef
from durable_chaos.safety.checkers import percentile
from durable_chaos.safety.history import read_history, run_dir
from subjects.etcd import LOAD_PREFIX, EtcdSession

REPO = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_etcd.lua"
KEY_PREFIX = "loadgen-k"  # chaos/kv/loadgen-k00..31, for both sides
AIM_RATIO = 0.5
AIM_RATE_DEVIATION = 0.05
OPEN_RATE = 2000.0  # the throughput comparison's open-loop side: more than 16 in flight let it send
WRK_SHARES = (0.5, 0.75, 1.0)  # of wrk's rate, where the open loop's rate is measured too


def _register_session(url: str) -> EtcdSession:
    """etcd's session, held to the plain put/range mix wrk sends (the shipped one adds compare-and-set)."""
    session = EtcdSession({"etcd1": url})
    session.model = "register"
    return session


def _keys() -> tuple[str, ...]:
    return tuple(f"{KEY_PREFIX}{i:02d}" for i in range(KEYS))


def _host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else 0.0


# -- one measurement, in a process of its own ------------------------------------------------------------------


async def _closed(url: str, seconds: float, concurrency: int, timeout: float) -> dict:
    """`concurrency` clients, each sending its next operation through `one_op` when the last one returned."""
    session = _register_session(url)
    workload = Registers(_keys(), time.time_ns())  # the open loop's mix
    ops = []

    async def client(c: int, until: float) -> None:
        rng, seq = random.Random(c), c
        while time.monotonic() < until:
            kind, key, value = workload.next(rng, seq, c)
            ops.append(await one_op(session, kind, c, key, value, seq, timeout, time.time_ns()))
            seq += concurrency

    try:
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(client(c, t0 + seconds) for c in range(concurrency)))
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    finally:
        await session.aclose()
    return _tally(ops, wall, cpu)


async def _open(url: str, seconds: float, concurrency: int, timeout: float, rate: float = OPEN_RATE) -> dict:
    """The product's open loop at `rate` (by default more than it can send at 16 in flight)."""
    session = _register_session(url)
    req = LoadRequest(subject=SubjectRef(name="etcd"), window_s=seconds, concurrency=concurrency,
                      check_timeout_s=timeout, rate=rate)
    try:
        cpu0, t0 = time.process_time(), time.monotonic()
        ops = await ActivityEnvironment().run(_open_loop, session, req, _keys(), time.time_ns())
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    finally:
        await session.aclose()
    return _tally(ops, wall, cpu)


class _FloorConnection(asyncio.Protocol):
    """One connection of the floor side: sends its next pre-built request when an answer is complete, until `until`
    (monotonic). An answer counts as wrk counts it: HTTP 200 with a "header" in its body."""

    def __init__(self, requests: list[bytes], until: float, tally: Counter):
        self.requests, self.until, self.tally, self.sent = requests, until, tally, 0
        self.parser = httptools.HttpResponseParser(self)
        self.body = b""
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.body = b""
        self.transport.write(self.requests[self.sent % len(self.requests)])
        self.sent += 1

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        good = self.parser.get_status_code() == 200 and b'"header"' in self.body
        self.tally["ok" if good else "errors"] += 1
        if time.monotonic() < self.until:
            self._send()
        elif not self.done.done():
            self.done.set_result(None)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.tally["errors"] += 1
            self.done.set_result(None)


def _floor_requests(host: str, port: int) -> list[bytes]:
    """wrk's requests, built once: a put and a range of each key, JSON with base64 key and value."""
    out = []
    for key in _keys():
        k = base64.b64encode(f"{LOAD_PREFIX}{key}".encode()).decode()
        for path, body in (("/v3/kv/put", {"key": k, "value": base64.b64encode(b"floor").decode()}),
                           ("/v3/kv/range", {"key": k})):
            payload = json.dumps(body).encode()
            out.append(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: "
                       b"%d\r\n\r\n%s" % (path.encode(), host.encode(), port, len(payload), payload))
    return out


async def _floor(url: str, seconds: float, concurrency: int, timeout: float) -> dict:
    """`concurrency` bare connections in a closed loop (see the module's docstring)."""
    parts = urlsplit(url)
    requests, tally = _floor_requests(parts.hostname, parts.port), Counter()
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), time.monotonic()
    conns = []
    for c in range(concurrency):  # each starts at another request, as wrk's connections do
        ordered = requests[c:] + requests[:c]
        _, conn = await loop.create_connection(lambda: _FloorConnection(ordered, t0 + seconds, tally),
                                               parts.hostname, parts.port)
        conns.append(conn)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), seconds + timeout)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {"ok": tally["ok"], "errors": tally["errors"], "not_sent": 0, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "p50_ms": None, "p99_ms": None}


def _tally(ops: list, wall: float, cpu: float) -> dict:
    ok = [op.latency_ms for op in ops if op.outcome == "ok"]
    capped = sum(op.capped for op in ops)
    return {"ok": len(ok), "errors": len(ops) - len(ok) - capped, "not_sent": capped, "due": len(ops),
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "p50_ms": percentile(ok, 50),
            "p99_ms": percentile(ok, 99)}


# -- the benchmark side ------------------------------------------------------------------------------------------


def _run_process(cmd: list[str], cwd: Path | None = None) -> tuple[str, float, float]:
    """Run a command to its end: (stdout, its CPU seconds from rusage, wall seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Read the pipes first (a full pipe would block the child), then reap it with its rusage.
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err.strip()[-400:]}")
    return out, usage.ru_utime + usage.ru_stime, time.monotonic() - t0


def _wrk(url: str, seconds: float, concurrency: int) -> dict:
    from bench.tools import ensure_tool  # noqa: PLC0415 - installs wrk on first use

    cmd = [ensure_tool("wrk"), "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(WRK_SCRIPT), url,
           "--", KEY_PREFIX]
    out, cpu, _ = _run_process(cmd)
    r = json.loads(out.strip().splitlines()[-1])
    ok = r["requests"] - r["bad"]
    wall = r["duration_us"] / 1e6
    return {"ok": ok, "errors": r["bad"] + r["connect"] + r["read"] + r["write"] + r["timeout"], "not_sent": 0,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000}


def _ours(mode: str, url: str, seconds: float, concurrency: int, timeout: float, *rate: float) -> dict:
    out, _, _ = _run_process([sys.executable, "-m", "bench.loadgen", mode, url, str(seconds), str(concurrency),
                              str(timeout), *map(str, rate)], cwd=REPO)
    return json.loads(out.strip().splitlines()[-1])


SIDES = {
    "wrk": lambda url, s, c, t: _wrk(url, s, c),
    "closed": lambda url, s, c, t: _ours("closed", url, s, c, t),
    "open": lambda url, s, c, t: _ours("open", url, s, c, t),
    "floor": lambda url, s, c, t: _ours("floor", url, s, c, t),
}


def _measure(side: str, url: str, seconds: float, concurrency: int, timeout: float) -> dict:
    before = _host_cpu()
    r = SIDES[side](url, seconds, concurrency, timeout)
    r["host_busy_pct"] = _busy_pct(before, _host_cpu())
    r["ops_s"] = round(r["ok"] / r["wall_s"], 1) if r["wall_s"] else 0.0
    r["cpu_per_1k_ops_s"] = round(1000 * r["cpu_s"] / r["ok"], 4) if r["ok"] else None
    return r


async def throughput(url: str, seconds: float, rounds: int, concurrency: int, timeout: float,
                     say=print) -> dict:
    sides = list(SIDES)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for k in range(rounds):
        order = sides[k % len(sides):] + sides[:k % len(sides)]  # nobody always goes first
        for side in order:
            r = await asyncio.to_thread(_measure, side, url, seconds, concurrency, timeout)
            r["round"] = k
            runs[side].append(r)
            say(f"  round {k + 1}/{rounds} {side}: {r['ops_s']} ops/s, CPU {r['cpu_per_1k_ops_s']} s per 1,000 ops, "
                f"host busy {r['host_busy_pct']}%")

    def med(side: str, key: str) -> float | None:
        values = [r[key] for r in runs[side] if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    def ratio(side: str) -> float | None:
        pairs = [o["ops_s"] / w["ops_s"] for o, w in zip(runs[side], runs["wrk"]) if w["ops_s"]]
        return round(statistics.median(pairs), 3) if pairs else None

    summary = {side: {"ops_s": med(side, "ops_s"), "cpu_per_1k_ops_s": med(side, "cpu_per_1k_ops_s"),
                      "p50_ms": med(side, "p50_ms"), "p99_ms": med(side, "p99_ms"),
                      "errors": sum(r["errors"] for r in runs[side]),
                      "not_sent": sum(r["not_sent"] for r in runs[side]),
                      "host_busy_pct": med(side, "host_busy_pct")} for side in sides}
    for side in ("closed", "open", "floor"):
        summary[side]["ratio_to_wrk"] = ratio(side)
    return {"endpoint": url, "seconds": seconds, "rounds": rounds, "concurrency": concurrency, "wrk_threads": 1,
            "open_rate": OPEN_RATE, "summary": summary, "runs": runs}


async def rate_accuracy(ref: SubjectRef, rates: list[float], windows: int, concurrency: int, timeout: float,
                        say=print) -> list[dict]:
    """`windows` one-second windows back to back at each rate, through the activity, on a healthy copy, with at most
    `concurrency` operations in flight."""
    rows = []
    for rate in rates:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_id=f"bench-loadgen-{uuid.uuid4().hex[:8]}",
                                       workflow_run_id=f"rate-{rate:g}")
        folder = run_dir(env.info.workflow_id, env.info.workflow_run_id)
        try:
            req = LoadRequest(subject=ref, window_s=1.0, concurrency=concurrency, check_timeout_s=timeout, rate=rate)
            cpu0, t0 = time.process_time(), time.monotonic()
            due_from = None
            for _ in range(windows):  # chained as the workflow chains them
                window = await env.run(run_load_window, req.model_copy(update={"due_from": due_from}))
                due_from = window.start + timedelta(seconds=req.window_s)
            wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
            ops = (await asyncio.to_thread(read_history, folder)).ops
        finally:
            shutil.rmtree(folder.parent, ignore_errors=True)  # the history parts: the benchmark keeps none
        sent = [op for op in ops if not op.capped]
        # Answered as the run counts it (`Op.served`): a compare-and-set that found another value is an answer.
        ok = sorted(op.latency_ms for op in ops if op.served)
        sent_s, ok_s = len(sent) / wall, len(ok) / wall
        row = {"target_ops_s": rate, "concurrency": concurrency, "windows": windows, "wall_s": round(wall, 3),
               "due": len(ops), "sent": len(sent), "answered": len(ok), "not_sent": len(ops) - len(sent),
               "errors": len(sent) - len(ok),
               "error_kinds": dict(Counter((op.error or "")[:60] for op in sent if not op.served).most_common(3)),
               "sent_ops_s": round(sent_s, 1), "answered_ops_s": round(ok_s, 1),
               "sent_deviation_pct": round(100 * (sent_s / rate - 1), 2),
               "answered_deviation_pct": round(100 * (ok_s / rate - 1), 2),
               # How much longer than its 1 s a window took: the wait for the last answers and writing the part.
               "overrun_ms_per_window": round(1000 * (wall / windows - req.window_s), 1),
               "p50_ms": percentile(ok, 50), "p99_ms": percentile(ok, 99),
               "cpu_per_1k_ops_s": round(1000 * cpu / len(sent), 4) if sent else None}
        worst = max(abs(row["sent_deviation_pct"]), abs(row["answered_deviation_pct"]))
        row["held"] = worst <= 100 * AIM_RATE_DEVIATION
        rows.append(row)
        say(f"  {rate:g} ops/s: sent {row['sent_ops_s']}, answered {row['answered_ops_s']} "
            f"({row['answered_deviation_pct']:+.2f}%), not sent {row['not_sent']}, errors {row['errors']}")
    return rows


async def figures(ref: SubjectRef, endpoint: str, *, seconds: float, rounds: int, concurrency: int, timeout: float,
                  rates: list[float], windows: int, open_concurrency: int, say=print) -> dict:
    say(f"  throughput: wrk vs ours at {concurrency}, {rounds} rounds of {seconds:g}s against {endpoint}")
    out = {"throughput": await throughput(endpoint, seconds, rounds, concurrency, timeout, say)}
    say(f"  open-loop rate: {windows} windows of 1 s at {', '.join(f'{r:g}' for r in rates)} ops/s")
    out["rate"] = await rate_accuracy(ref, rates, windows, concurrency, timeout, say)
    if wrk := out["throughput"]["summary"]["wrk"]["ops_s"]:
        say(f"  open loop up to wrk's {wrk:g} ops/s on the same member, {open_concurrency} in flight at most")
        out["up_to_wrk"] = await up_to_wrk(endpoint, wrk, seconds, open_concurrency, timeout, say)
    return out


async def up_to_wrk(url: str, wrk_ops_s: float, seconds: float, concurrency: int, timeout: float,
                    say=print) -> list[dict]:
    """The product's open loop (`_open_loop`, in a process of its own as in the throughput rounds) against wrk's
    endpoint with wrk's requests, at shares of the rate wrk reached there: does it send and get answered what it
    was asked for, up to what the member answers? `concurrency` in flight at most: at that rate a closed loop's 16
    leave no room for a slower answer."""
    rows = []
    for share in WRK_SHARES:
        rate = min(MAX_LOAD_RATE, share * wrk_ops_s // 100 * 100)
        r = await asyncio.to_thread(_ours, "open", url, seconds, concurrency, timeout, rate)
        answered_s = r["ok"] / r["wall_s"]
        row = {"share_of_wrk": share, "target_ops_s": rate, "concurrency": concurrency, **r,
               "answered_ops_s": round(answered_s, 1),
               "answered_deviation_pct": round(100 * (answered_s / rate - 1), 2)}
        row["held"] = abs(row["answered_deviation_pct"]) <= 100 * AIM_RATE_DEVIATION
        rows.append(row)
        say(f"  {rate:g} ops/s ({share:.0%} of wrk): answered {row['answered_ops_s']} "
            f"({row['answered_deviation_pct']:+.2f}%), not sent {r['not_sent']}, errors {r['errors']}, "
            f"p50/p99 {r['p50_ms']}/{r['p99_ms']} ms")
    return rows


if __name__ == "__main__":
    mode, url, secs, conc, tmo, *rate = sys.argv[1:]
    measure = {"closed": _closed, "open": _open, "floor": _floor}[mode]
    # On uvloop, as `python worker.py` runs the load windows.
    print(json.dumps(uvloop.run(measure(url, float(secs), int(conc), float(tmo), *map(float, rate)))))
