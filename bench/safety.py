"""The safety checker's speed, and the history's size, on a minute of load at the default rate.

The history is synthetic but shaped like a run's: the load's keys, read/write mix and rate, answers in a few
milliseconds, then a fault during which writes time out (info, half of which land anyway) and reads fail, and
slow answers around it. Every operation takes effect at a random moment between its invoke and its answer on a
real register, so the history is linearizable and every checker must say `ok` (a checker that finds nothing to
do would be fast for the wrong reason: the figure says how many operations each checker examined).
"""

from __future__ import annotations

import bisect
import heapq
import random
import tempfile
from collections import defaultdict
import time
from pathlib import Path

from activities.load import KEYS
from durable_chaos.contracts import DEFAULT_LOAD_RATE
from durable_chaos.safety.checkers import check
from durable_chaos.safety.history import PART_SUFFIX, Op, read_history, size_bytes, write_part
from durable_chaos.safety.list_append import check_list_append
from durable_chaos.safety.queue import check_queue
from durable_chaos.safety.workloads import WRITE_SHARE, ListAppend

MS = 1_000_000


def synthetic_history(seconds: float = 60.0, rate: float = DEFAULT_LOAD_RATE, fault: tuple[float, float] = (20, 26),
                      seed: int = 1) -> list[Op]:
    rng = random.Random(seed)
    planned: list[tuple[int, Op]] = []  # (when it takes effect, op); None effect: never
    for seq in range(int(seconds * rate)):
        at = int(seq * 1e9 / rate)
        in_fault = fault[0] * 1e9 <= at < fault[1] * 1e9
        near_fault = fault[0] * 1e9 - 1e9 <= at < fault[1] * 1e9 + 2e9
        latency = rng.uniform(200, 1000) * MS if near_fault and not in_fault else rng.lognormvariate(0.7, 0.4) * MS
        kind = "write" if rng.random() < WRITE_SHARE else "read"
        op = Op(kind=kind, outcome="ok", invoke_ns=at, complete_ns=at + int(latency), key=f"k{rng.randrange(KEYS):02d}",
                value=f"v{seq}" if kind == "write" else None, process=seq % 16)
        effect = rng.uniform(op.invoke_ns, op.complete_ns)
        if in_fault:
            op.complete_ns = at + 500 * MS  # the timeout
            op.outcome = "info" if kind == "write" else "fail"
            effect = rng.uniform(at, at + 2e9) if kind == "write" and rng.random() < 0.5 else None
        planned.append((effect, op))
    state: dict[str, tuple[str, int]] = {}
    revision = 0
    for _, op in sorted((p for p in planned if p[0] is not None), key=lambda p: p[0]):
        if op.kind == "write":
            revision += 1
            state[op.key] = (op.value, revision)
            op.token = revision if op.outcome == "ok" else None
        elif op.key in state:
            op.value, op.token = state[op.key]
    end = int(seconds * 1e9) + 3_000_000_000
    finals = [Op(kind="read", outcome="ok", invoke_ns=end, complete_ns=end + MS, key=key, value=value, token=token,
                 final=True) for key, (value, token) in state.items()]
    return sorted([op for _, op in planned] + finals, key=lambda op: op.invoke_ns)


def figures(seconds: float = 60.0, rate: float = DEFAULT_LOAD_RATE) -> dict:
    ops = synthetic_history(seconds, rate)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for second in range(int(seconds)):  # one part per one-second load window, as a run writes them
            window = [op for op in ops if not op.final and int(op.invoke_ns // 1e9) == second]
            write_part(folder / f"{second:05d}{PART_SUFFIX}", window)
        write_part(folder / f"final{PART_SUFFIX}", [op for op in ops if op.final])
        size = size_bytes(folder)
        began = time.perf_counter()
        ops = read_history(folder).ops
        read_s = time.perf_counter() - began
    began = time.perf_counter()
    report = check(ops, token_name="revision", fault_start_ns=20 * 10**9, fault_end_ns=26 * 10**9)
    check_s = time.perf_counter() - began
    return {
        "seconds_of_load": seconds, "rate_ops_s": rate, "ops": len(ops), "verdict": report.verdict,
        "checks": {c.name: c.verdict for c in report.checks},
        "read_s": round(read_s, 3), "check_s": round(check_s, 3), "total_s": round(read_s + check_s, 3),
        "ops_checked_per_s": round(len(ops) / (read_s + check_s)),
        "history_bytes": size, "history_kib_per_minute": round(size / 1024 * 60 / seconds, 1),
    }


if __name__ == "__main__":
    print(figures())


# -- each model on long, adversarial histories ---------------------------------------------------------------------

PROCESSES = 10
MODEL_OPS = 5000
INFO_SHARE = 0.05


def register_history(cas: bool, keys: int = 1, ops: int = MODEL_OPS, processes: int = PROCESSES,
                     info_share: float = INFO_SHARE, seed: int = 7) -> list[Op]:
    """`processes` clients, each sending its next operation when the last returned, on `keys` registers; each
    operation takes effect at a random moment of its interval, so the history is linearizable. `info_share` of the
    writes and swaps time out (info): half of those take effect anyway, and their values are read. One key is the
    hard case: every operation overlaps nine others, and each info operation may take effect until the end."""
    rng = random.Random(seed)
    clock = [rng.uniform(0, 1) * MS for _ in range(processes)]
    planned: list[tuple[float | None, Op]] = []
    for seq in range(ops):
        p = min(range(processes), key=lambda i: clock[i])
        start = clock[p]
        end = start + rng.lognormvariate(0.7, 0.6) * MS
        key = f"k{rng.randrange(keys)}"
        roll = rng.random()
        kind = "cas" if cas and roll < 0.4 else "write" if roll < (0.7 if cas else 0.5) else "read"
        value = f"v{seq}" if kind == "write" else [None, f"v{seq}"] if kind == "cas" else None
        op = Op(kind=kind, outcome="ok", invoke_ns=int(start), complete_ns=int(end), key=key, value=value,
                process=p)
        effect: float | None = rng.uniform(start, end)
        if kind != "read" and rng.random() < info_share:
            op.outcome, op.complete_ns = "info", int(start + 500 * MS)  # the timeout
            effect = rng.uniform(start, start + 2000 * MS) if rng.random() < 0.5 else None
        planned.append((effect, op))
        clock[p] = op.complete_ns + rng.uniform(0, 0.2) * MS
    state: dict[str, str | None] = {}
    for _, op in sorted((p for p in planned if p[0] is not None), key=lambda p: p[0]):
        current = state.get(op.key)
        if op.kind == "read":
            op.value = current
        elif op.kind == "write":
            state[op.key] = op.value
        elif op.outcome == "info" or rng.random() < 0.7:  # most swaps expect what is there; the rest fail
            op.value[0] = current
            state[op.key] = op.value[1]
        else:
            op.value[0], op.outcome = f"stale-{op.value[1]}", "fail"
    for effect, op in planned:  # a cas that never took effect expects something that was never there
        if op.kind == "cas" and effect is None:
            op.value[0] = f"gone-{op.value[1]}"
    end = max(op.complete_ns for _, op in planned) + 3000 * MS
    finals = [Op(kind="read", outcome="ok", invoke_ns=end, complete_ns=end + MS, key=key, value=value, final=True)
              for key, value in state.items()]
    return sorted([op for _, op in planned] + finals, key=lambda op: op.invoke_ns)


def stale(ops: list[Op]) -> list[Op]:
    """The same history with one read, in its last tenth, answered from an older write (a stale replica)."""
    ops = [Op(**{f: getattr(op, f) for f in op.__slots__}) for op in ops]
    reads = [op for op in ops[len(ops) * 9 // 10:] if op.kind == "read" and op.outcome == "ok"]
    victim = reads[len(reads) // 2]
    older = [op for op in ops if op.key == victim.key and op.kind == "write" and op.outcome == "ok"
             and op.complete_ns < victim.invoke_ns and op.value != victim.value]
    victim.value = older[-len(older) // 2].value
    return ops


def _timed(ops: list[Op], model: str) -> tuple[str, float]:
    began = time.perf_counter()
    report = check(ops, model=model)
    return report.verdict, round(time.perf_counter() - began, 3)


def queue_history(ops: int = MODEL_OPS, processes: int = PROCESSES, info_share: float = INFO_SHARE,
                  fetch_share: float = 0.2, seed: int = 11) -> list[Op]:
    """`processes` publishers, each sending its next operation when the last returned: mostly publishes (each
    client its own counter), some fetches of up to 10 messages. A publish takes effect at a random moment of its
    interval; `info_share` of them time out, half of which land anyway, up to two seconds later, so deliveries and
    the stream interleave them with later messages. A fetch is given the next messages in stream order; at the end
    three replicas hold the whole stream. Legal: every queue check must say ok."""
    rng = random.Random(seed)
    clock = [rng.uniform(0, 1) * MS for _ in range(processes)]
    counters = [0] * processes
    planned: list[tuple[float, Op]] = []  # (when it takes effect, op)
    history: list[Op] = []
    for seq in range(ops):
        p = min(range(processes), key=lambda i: clock[i])
        start = clock[p]
        end = start + rng.lognormvariate(0.7, 0.6) * MS
        if rng.random() < fetch_share:
            op = Op(kind="fetch", outcome="ok", invoke_ns=int(start), complete_ns=int(end), process=p)
            planned.append((rng.uniform(start, end), op))
        else:
            counters[p] += 1
            op = Op(kind="publish", outcome="ok", invoke_ns=int(start), complete_ns=int(end), process=p,
                    value={"id": f"m{seq}", "publisher": p, "n": counters[p]})
            effect: float | None = rng.uniform(start, end)
            if rng.random() < info_share / (1 - fetch_share):  # info_share of all the operations
                op.outcome, op.complete_ns = "info", int(start + 500 * MS)  # the timeout
                effect = rng.uniform(start, start + 2000 * MS) if rng.random() < 0.5 else None
            if effect is not None:
                planned.append((effect, op))
        history.append(op)
        clock[p] = op.complete_ns + rng.uniform(0, 0.2) * MS
    stream: list[list] = []
    cursor = 0  # the consumer's place in the stream
    for _, op in sorted(planned, key=lambda p: p[0]):
        if op.kind == "publish":
            stream.append([op.value["id"], len(stream) + 1])
            op.token = len(stream) if op.outcome == "ok" else None
        else:
            op.value = [list(m) for m in stream[cursor:cursor + 10]]
            cursor += len(op.value)
    end = max(op.complete_ns for op in history) + 3000 * MS
    drains = [Op(kind="drain", outcome="ok", invoke_ns=end, complete_ns=end + MS, final=True,
                 value={"replica": f"r{i}", "messages": [list(m) for m in stream]}) for i in range(3)]
    return sorted(history + drains, key=lambda op: op.invoke_ns)


def broken_queue(ops: list[Op]) -> list[Op]:
    """The same history with one acknowledged message of its middle lost (never delivered, on no replica) and one
    delivered message delivered again by a later fetch."""
    ops = [Op(**{f: getattr(op, f) for f in op.__slots__}) for op in ops]
    acked = [op for op in ops if op.kind == "publish" and op.outcome == "ok"]
    gone = acked[len(acked) // 2].value["id"]
    for op in ops:
        if op.kind == "drain":
            op.value = {**op.value, "messages": [m for m in op.value["messages"] if m[0] != gone]}
        elif op.kind == "fetch" and op.value:
            op.value = [m for m in op.value if m[0] != gone]
    fetches = [op for op in ops if op.kind == "fetch" and op.value]
    again = fetches[len(fetches) // 3]
    fetches[len(fetches) // 2].value = fetches[len(fetches) // 2].value + [list(again.value[0])]
    return ops


def _timed_queue(ops: list[Op]) -> tuple[str, float]:
    """The queue checker alone (safety/queue.py, with the stream sequences' order), timed."""
    began = time.perf_counter()
    findings = check_queue(ops, token_name="stream sequence", gapless=True)
    verdict = "violated" if any(f.verdict == "violated" for f in findings) else \
        "unknown" if any(f.verdict == "unknown" for f in findings) else "ok"
    return verdict, round(time.perf_counter() - began, 3)


def queue_figures() -> dict:
    """The queue model: check time on the whole history, legal and with one lost message and one redelivery."""
    ops = queue_history()
    legal, legal_s = _timed_queue(ops)
    broken, broken_s = _timed_queue(broken_queue(ops))
    return {"model": "queue", "keys": 1, "ops": sum(1 for op in ops if not op.final), "processes": PROCESSES,
            "info": sum(1 for op in ops if op.outcome == "info"), "legal_verdict": legal, "legal_s": legal_s,
            "broken": "one lost message, one redelivery", "stale_verdict": broken, "stale_s": broken_s}


def model_figures() -> list[dict]:
    """Each register model: check time on the whole history, legal and with one stale read, on one key and on the
    load's 32; then the queue model."""
    rows = []
    for model, cas in (("register", False), ("cas-register", True)):
        for keys in (1, KEYS):
            ops = register_history(cas, keys)
            legal, legal_s = _timed(ops, model)
            broken, broken_s = _timed(stale(ops), model)
            rows.append({"model": model, "keys": keys, "ops": len(ops), "processes": PROCESSES,
                         "info": sum(1 for op in ops if op.outcome == "info"),
                         "legal_verdict": legal, "legal_s": legal_s, "broken": "one stale read",
                         "stale_verdict": broken, "stale_s": broken_s})
    return rows + [queue_figures()]


def list_append_history(txns: int = MODEL_OPS, processes: int = PROCESSES, info_share: float = INFO_SHARE,
                        snapshot: bool = False, failover: tuple[float, float] | None = None, seed: int = 1) -> list[Op]:
    """`txns` transactions of the list-append workload from `processes` clients, each sending its next one when
    the last answered, 1-60 ms each (so about all ten overlap), `info_share` of them timing out after 500 ms (half
    of those land anyway, within a second), then a final read of every key. Each takes effect at once at a random
    moment between its invoke and its answer (strictly serializable: the checker must say ok and has every
    dependency to follow), or, with `snapshot`, reads what was committed when it began and appends when it takes
    effect (snapshot isolation without its first-committer-wins rule: lost updates and write skew to find). With
    `failover` (from, at) in seconds, what took effect from `from` on is gone at `at`, as when an asynchronous
    replica that had not received it takes over."""
    rng = random.Random(seed)
    keys = tuple(f"k{i:02d}" for i in range(KEYS))
    base_ns = 1_700_000_000 * 10**9
    workloads: dict[int, ListAppend] = {}
    free = [(0, p) for p in range(processes)]  # (when the process may send again, process)
    planned: list[tuple[float, Op]] = []  # (when it takes effect, op); infinity: never
    for seq in range(txns):
        at, process = heapq.heappop(free)
        at += int(rng.uniform(0, 2) * MS)
        window = at // 10**9
        workload = workloads.setdefault(window, ListAppend(keys, base_ns + window * 10**9))
        _, _, micro = workload.next(rng, seq, process)
        latency = int(rng.uniform(1, 60) * MS)
        op = Op(kind="txn", outcome="ok", invoke_ns=base_ns + at, complete_ns=base_ns + at + latency, value=micro,
                process=process)
        effect = rng.uniform(op.invoke_ns, op.complete_ns)
        if rng.random() < info_share:
            op.outcome, op.complete_ns = "info", op.invoke_ns + 500 * MS
            effect = rng.uniform(op.invoke_ns, op.invoke_ns + 10**9) if rng.random() < 0.5 else float("inf")
        planned.append((effect, op))
        heapq.heappush(free, (op.complete_ns - base_ns, process))
    state: dict[str, list[int]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)  # when each element of state[key] was appended
    for effect, op in sorted(planned, key=lambda p: p[0]):
        if effect == float("inf"):
            continue
        if failover and effect >= base_ns + failover[1] * 1e9:
            for key in state:
                kept = bisect.bisect_left(times[key], base_ns + failover[0] * 1e9)
                del state[key][kept:], times[key][kept:]
            failover = None
        seen_at = op.invoke_ns if snapshot else effect
        mine: dict[str, list[int]] = defaultdict(list)
        for m in op.value:
            _, key, value = m
            if m[0] == "append":
                mine[key].append(value)
            elif op.outcome == "ok":
                m[2] = state[key][:bisect.bisect_left(times[key], seen_at)] + mine[key]
        for key, values in mine.items():
            state[key] += values
            times[key] += [effect] * len(values)
    end = base_ns + max(op.complete_ns - base_ns for _, op in planned) + 2 * 10**9
    finals = [Op(kind="txn", outcome="ok", invoke_ns=end, complete_ns=end + MS, value=[["r", key, list(values)]],
                 final=True) for key, values in sorted(state.items())]
    return sorted([op for _, op in planned] + finals, key=lambda op: op.invoke_ns)


def list_append_figures(txns: int = MODEL_OPS, processes: int = PROCESSES, info_share: float = INFO_SHARE) -> dict:
    """The list-append checker's time on a strictly serializable history, on a snapshot-isolated one, and on one
    that loses 3 s of appends in a failover, each held to strict serializability."""
    figures = {"txns": txns, "processes": processes, "info_share": info_share}
    for name, snapshot, failover in (("serializable", False, None), ("snapshot", True, None),
                                     ("failover", False, (12.0, 15.0))):
        ops = list_append_history(txns, processes, info_share, snapshot, failover)
        began = time.perf_counter()
        found = check_list_append(ops, isolation="strict-serializable")
        check_s = time.perf_counter() - began
        summary = found[-1]
        lost = next(f for f in found if f.name == "lost appends")
        figures[name] = {"check_s": round(check_s, 3), "verdict": summary.verdict, "detail": summary.detail,
                         "lost_appends": lost.count,
                         "micro_ops": sum(len(op.value) for op in ops),
                         "read_elements": sum(len(m[2] or []) for op in ops for m in op.value if m[0] == "r")}
    return figures
