"""The queue/log checker (safety/queue.py) on hand-made histories with known verdicts, and against a brute-force
checker on small random histories of a correct and a faulty simulated queue.

Times are in milliseconds. `pub` builds a publish, `fetch` a consumer's fetch, `drain` one replica's final drain.
"""

from __future__ import annotations

import random
import re

import pytest

from durable_chaos.safety.history import Op
from durable_chaos.safety.queue import check_queue

MS = 1_000_000
REPLICAS = ("nats1", "nats2", "nats3")


def pub(mid: str, publisher: int, n: int, start: float, end: float, outcome: str = "ok",
        seq: int | None = None) -> Op:
    return Op(kind="publish", outcome=outcome, invoke_ns=int(start * MS), complete_ns=int(end * MS),
              value={"id": mid, "publisher": publisher, "n": n}, process=publisher,
              token=seq if outcome == "ok" else None)


def fetch(delivered: list[list], start: float, end: float, outcome: str = "ok", client: int = 9) -> Op:
    return Op(kind="fetch", outcome=outcome, invoke_ns=int(start * MS), complete_ns=int(end * MS),
              value=delivered if outcome == "ok" else None, process=client)


def drain(replica: str, messages: list[list], at: float = 10_000, outcome: str = "ok") -> Op:
    value = {"replica": replica, "messages": messages} if outcome == "ok" else {"replica": replica}
    return Op(kind="drain", outcome=outcome, invoke_ns=int(at * MS), complete_ns=int((at + 1) * MS), value=value,
              final=True)


def drains(messages: list[list], **per_replica: list[list]) -> list[Op]:
    """Every replica holds `messages`, except those given by name."""
    return [drain(r, per_replica.get(r, messages)) for r in REPLICAS]


def verdicts(ops: list[Op]) -> dict[str, str]:
    return {f.name: f.verdict for f in check_queue(ops)}


def finding(ops: list[Op], name: str):
    return next(f for f in check_queue(ops) if f.name == name)


def legal() -> list[Op]:
    """Two publishers, a fetch that got the first three, the rest left in the stream."""
    return [pub("a1", 1, 1, 0, 2, seq=1), pub("b1", 2, 1, 1, 3, seq=2), pub("a2", 1, 2, 4, 5, seq=3),
            fetch([["a1", 1], ["b1", 2], ["a2", 3]], 6, 7), pub("b2", 2, 2, 8, 9, seq=4),
            *drains([["a1", 1], ["b1", 2], ["a2", 3], ["b2", 4]])]


# -- hand-made histories -------------------------------------------------------------------------------------------


def test_a_legal_history_passes_every_check():
    assert verdicts(legal()) == {"lost messages": "ok", "duplicated messages": "ok", "unexpected messages": "ok",
                                 "publisher order": "ok", "replica agreement": "ok"}


def test_a_message_delivered_twice_is_a_duplicate():
    again = fetch([["b1", 2]], 7.5, 7.8)
    h = legal() + [again]
    found = finding(h, "duplicated messages")
    assert found.verdict == "violated" and found.count == 1
    assert "b1" in found.detail and "delivered twice" in found.detail
    assert again in found.ops and h[3] in found.ops  # both fetches


def test_a_message_stored_twice_under_two_sequences_is_a_duplicate():
    h = legal()[:-3] + drains([["a1", 1], ["b1", 2], ["a2", 3], ["b2", 4], ["a2", 5]])
    found = finding(h, "duplicated messages")
    assert found.verdict == "violated" and found.count == 1
    assert "a2" in found.detail and "sequences 3, 5" in found.detail


def test_a_message_lost_in_the_middle():
    # b2 (seq 4) was acknowledged, never delivered, and no replica holds it, while a3 (seq 5) survived.
    h = legal()[:-3] + [pub("a3", 1, 3, 10, 11, seq=5),
                        *drains([["a1", 1], ["b1", 2], ["a2", 3], ["a3", 5]])]
    found = finding(h, "lost messages")
    assert found.verdict == "violated" and found.count == 1
    assert "1 in the middle of the stream, 0 at its tail" in found.detail
    assert "message b2" in found.detail and "sequence 5 (a3) survived" in found.detail
    assert [op.value["id"] for op in found.ops if op.kind == "publish"] == ["b2", "a3"]
    # The replicas agree with each other; what they lack was acknowledged: a sequence below their last is missing.
    assert finding(h, "replica agreement").verdict == "violated"


def test_a_message_lost_at_the_tail():
    h = legal()[:-3] + drains([["a1", 1], ["b1", 2], ["a2", 3]])
    found = finding(h, "lost messages")
    assert found.verdict == "violated" and found.count == 1
    assert "0 in the middle of the stream, 1 at its tail" in found.detail and "message b2" in found.detail
    # Above every replica's last sequence: lagging, not disagreeing.
    assert finding(h, "replica agreement").verdict == "ok"


def test_a_delivered_message_gone_from_the_stream_is_not_lost_but_the_replicas_lack_it():
    h = legal()[:-3] + drains([["a1", 1], ["a2", 3], ["b2", 4]])
    assert finding(h, "lost messages").verdict == "ok"
    found = finding(h, "replica agreement")
    assert found.verdict == "violated" and "lacks sequence 2" in found.detail


def test_a_delivered_message_gone_from_a_stream_that_keeps_delivered_messages_is_lost():
    # A log (JetStream's limits retention) still holds what its consumers acknowledged: b1 gone from every replica
    # is lost even though it was delivered. CI (stop 35) saw a power loss wipe 62 messages the load had all
    # fetched, and the report's headline was a publisher order violation instead of the loss.
    h = legal()[:-3] + drains([["a1", 1], ["a2", 3], ["b2", 4]])
    found = next(f for f in check_queue(h, keeps_delivered=True) if f.name == "lost messages")
    assert found.verdict == "violated" and found.count == 1
    assert "1 acknowledged message lost (1 in the middle of the stream, 0 at its tail" in found.detail
    assert "message b1" in found.detail and "was delivered, yet no replica holds it" in found.detail
    # A message never delivered is lost there just the same.
    h = legal()[:-3] + drains([["a1", 1], ["b1", 2], ["a2", 3]])
    found = next(f for f in check_queue(h, keeps_delivered=True) if f.name == "lost messages")
    assert found.verdict == "violated" and "message b2" in found.detail and "was never delivered" in found.detail


def test_unknown_publishes_are_never_lost_and_count_when_found():
    h = [pub("a1", 1, 1, 0, 2, seq=1), pub("a2", 1, 2, 3, 500, outcome="info"),
         pub("a3", 1, 3, 4, 500, outcome="info"), *drains([["a1", 1], ["a2", 2]])]
    found = finding(h, "lost messages")
    assert found.verdict == "ok" and "1 of 2 publishes of unknown outcome landed" in found.detail
    assert all(v == "ok" for v in verdicts(h).values())


def test_a_message_nobody_published_or_a_refused_one_is_unexpected():
    h = legal()[:-3] + [pub("a3", 1, 3, 10, 11, outcome="fail"),
                        *drains([["a1", 1], ["b1", 2], ["a2", 3], ["b2", 4], ["a3", 5], ["zz", 6]])]
    found = finding(h, "unexpected messages")
    assert found.verdict == "violated" and found.count == 2
    assert "message a3" in found.detail and "refused" in found.detail


def test_a_publisher_reordered_in_the_stream():
    # a2 was sent after a1 was acknowledged, yet the stream holds it first.
    h = [pub("a1", 1, 1, 0, 2, seq=2), pub("a2", 1, 2, 3, 4, seq=1), *drains([["a2", 1], ["a1", 2]])]
    found = finding(h, "publisher order")
    assert found.verdict == "violated" and found.count == 1
    assert "message a2" in found.detail and "before sequence 2" in found.detail
    assert [op.value["id"] for op in found.ops] == ["a1", "a2"]


def test_overlapping_publishes_of_a_publisher_may_land_in_either_order():
    h = [pub("a1", 1, 1, 0, 5, seq=2), pub("a2", 1, 2, 3, 4, seq=1), *drains([["a2", 1], ["a1", 2]])]
    assert finding(h, "publisher order").verdict == "ok"
    # Other publishers do not count either.
    h = [pub("a1", 1, 1, 0, 2, seq=2), pub("b1", 2, 1, 3, 4, seq=1), *drains([["b1", 1], ["a1", 2]])]
    assert finding(h, "publisher order").verdict == "ok"


def test_replicas_that_disagree_on_a_sequence():
    stream = [["a1", 1], ["b1", 2], ["a2", 3], ["b2", 4]]
    h = legal()[:-3] + drains(stream, nats3=[["a1", 1], ["a2", 2], ["b1", 3], ["b2", 4]])
    found = finding(h, "replica agreement")
    assert found.verdict == "violated" and found.count == 2
    assert "sequence 2 holds b1 on replica nats1 but a2 on replica nats3" in found.detail


def test_a_replica_that_lacks_a_sequence_below_its_last():
    stream = [["a1", 1], ["b1", 2], ["a2", 3], ["b2", 4]]
    h = legal()[:-3] + drains(stream, nats2=[["a1", 1], ["a2", 3], ["b2", 4]])
    found = finding(h, "replica agreement")
    assert found.verdict == "violated" and found.count == 1
    assert "replica nats2 lacks sequence 2" in found.detail


def test_a_replica_that_only_lags_is_not_blamed():
    stream = [["a1", 1], ["b1", 2], ["a2", 3], ["b2", 4]]
    assert all(v == "ok" for v in verdicts(legal()[:-3] + drains(stream, nats2=stream[:2])).values())


def test_sequences_are_judged_as_the_subjects_tokens_when_it_names_them():
    assert "stream sequence order" not in verdicts(legal())
    assert {f.name: f.verdict for f in check_queue(legal(), token_name="stream sequence", gapless=True)}[
        "stream sequence order"] == "ok"
    # b1 was acknowledged with sequence 2 and nothing was ever numbered 3: a hole no unknown publish explains.
    h = [pub("a1", 1, 1, 0, 2, seq=1), pub("b1", 2, 1, 3, 4, seq=2), pub("a2", 1, 2, 5, 6, seq=4),
         *drains([["a1", 1], ["b1", 2], ["a2", 4]])]
    found = next(f for f in check_queue(h, token_name="stream sequence", gapless=True)
                 if f.name == "stream sequence order")
    assert found.verdict == "violated" and "first gap after 2, before 4" in found.detail
    assert [op.kind for op in found.ops] == ["publish", "publish"]
    # A publish sent after another was acknowledged, numbered lower, across publishers.
    h = [pub("a1", 1, 1, 0, 2, seq=2), pub("b1", 2, 1, 3, 4, seq=1), *drains([["b1", 1], ["a1", 2]])]
    found = next(f for f in check_queue(h, token_name="stream sequence") if f.name == "stream sequence order")
    assert found.verdict == "violated" and "publish of message b1" in found.detail


def test_without_a_drain_lost_messages_are_unknown():
    h = legal()[:-3] + [drain(r, [], outcome="fail") for r in REPLICAS]
    assert finding(h, "lost messages").verdict == "unknown"


# -- randomized: against a brute-force checker ---------------------------------------------------------------------


def simulate(rng: random.Random, faulty: bool) -> list[Op]:
    """A small run against a queue: publishes take effect at a random moment of their interval (info ones maybe,
    later), the consumer is given the next messages in stream order, every replica holds the stream. A faulty
    queue then breaks it in one or two ways."""
    events: list[tuple[float, str, Op]] = []  # (when it takes effect, what, the op)
    ops: list[Op] = []
    counters: dict[int, int] = {}
    for i in range(rng.randint(3, 12)):
        start = rng.uniform(0, 100)
        end = start + rng.uniform(0.1, 20)
        if rng.random() < 0.75:
            publisher = rng.randint(1, 3)
            counters[publisher] = counters.get(publisher, 0) + 1
            outcome = rng.choices(["ok", "info", "fail"], [0.75, 0.15, 0.1])[0]
            op = pub(f"m{i}", publisher, counters[publisher], start, end, outcome=outcome)
            if outcome == "ok" or outcome == "info" and rng.random() < 0.5:
                events.append((rng.uniform(start, end if outcome == "ok" else end + 50), "publish", op))
        else:
            op = fetch([], start, end, outcome=rng.choices(["ok", "info"], [0.85, 0.15])[0])
            if op.outcome == "ok":
                events.append((rng.uniform(start, end), "fetch", op))
        ops.append(op)
    # Publishers' counters follow their invoke order, as the load's do.
    for publisher in counters:
        mine = sorted((op for op in ops if op.kind == "publish" and op.value["publisher"] == publisher),
                      key=lambda op: op.invoke_ns)
        for n, op in enumerate(mine, start=1):
            op.value["n"] = n
    stream: list[list] = []
    cursor = 0
    for _, what, op in sorted(events, key=lambda e: e[0]):
        if what == "publish":
            stream.append([op.value["id"], len(stream) + 1])
            if op.outcome == "ok":
                op.token = len(stream)
        else:
            take = rng.randint(0, 3)
            op.value = [list(m) for m in stream[cursor:cursor + take]]
            cursor += len(op.value)
    held = {r: [list(m) for m in stream] for r in REPLICAS}
    if faulty:
        for _ in range(rng.randint(1, 2)):
            _break(rng, stream, held, ops)
    finals = [drain(r, held[r]) if rng.random() < 0.9 else drain(r, [], outcome="fail") for r in REPLICAS]
    return ops + finals


def _break(rng: random.Random, stream: list[list], held: dict[str, list[list]], ops: list[Op]) -> None:
    fetches = [op for op in ops if op.kind == "fetch" and op.outcome == "ok"]
    fault = rng.choice(["lose", "lose one", "redeliver", "store twice", "swap", "invent", "rename"])
    replica = rng.choice(REPLICAS)
    if fault == "lose" and stream:
        gone = rng.choice(stream)[0]
        for r in REPLICAS:
            held[r] = [m for m in held[r] if m[0] != gone]
        for f in fetches:
            f.value = [m for m in f.value if m[0] != gone]
    elif fault == "lose one" and held[replica]:
        held[replica].pop(rng.randrange(len(held[replica])))
    elif fault == "redeliver" and fetches and stream:
        rng.choice(fetches).value.append(list(rng.choice(stream)))
    elif fault == "store twice" and held[replica]:
        held[replica].append([rng.choice(held[replica])[0], len(stream) + 1])
    elif fault == "swap" and len(stream) > 1:
        i, j = rng.sample(range(len(stream)), 2)
        for r in REPLICAS:
            ids = {m[1]: m[0] for m in held[r]}
            if stream[i][1] in ids and stream[j][1] in ids:
                a, b = ids[stream[i][1]], ids[stream[j][1]]
                held[r] = [[b if m[0] == a else a if m[0] == b else m[0], m[1]] for m in held[r]]
    elif fault == "invent":
        for r in REPLICAS:
            held[r].append(["ghost", len(stream) + 1])
    elif fault == "rename" and held[replica]:
        held[replica][rng.randrange(len(held[replica]))][0] = "other"


def brute_force(ops: list[Op], keeps_delivered: bool = False) -> dict[str, tuple[str, int]]:
    """The definitions, computed the slow obvious way: name -> (verdict, count)."""
    publishes = [op for op in ops if op.kind == "publish"]
    by_id = {op.value["id"]: op for op in publishes}
    deliveries = [(m[0], m[1]) for op in ops if op.kind == "fetch" and op.outcome == "ok" for m in op.value]
    drained = {op.value["replica"]: [(m[0], m[1]) for m in op.value["messages"]]
               for op in ops if op.kind == "drain" and op.outcome == "ok"}
    anywhere = [m for ms in drained.values() for m in ms]
    out = {}

    lost = [p for p in publishes if p.outcome == "ok"
            and (keeps_delivered or not any(m[0] == p.value["id"] for m in deliveries))
            and not any(m[0] == p.value["id"] for m in anywhere)]
    out["lost messages"] = ("unknown", 0) if not drained else ("violated" if lost else "ok", len(lost))
    out["lost in the middle"] = sum(1 for p in lost if any(m[1] > p.token for m in anywhere))

    twice = {m for m, _ in deliveries if [d[0] for d in deliveries].count(m) > 1}
    for ms in drained.values():
        twice |= {m for m, _ in ms if len({s for i, s in ms if i == m}) > 1}
    out["duplicated messages"] = ("violated" if twice else "ok", len(twice))

    odd = {m for m, _ in deliveries + anywhere if m not in by_id or by_id[m].outcome == "fail"}
    out["unexpected messages"] = ("violated" if odd else "ok", len(odd))

    views = [{p.value["id"]: p.token for p in publishes if p.outcome == "ok"}, {}]
    for m, s in deliveries:
        views[1].setdefault(m, s)
    views += [{m: min(s for i, s in ms if i == m) for m, _ in ms} for ms in drained.values()]
    reordered = set()
    for view in views:
        for a in publishes:
            for b in publishes:
                if (a.value["publisher"] == b.value["publisher"] and a.outcome == "ok" and b.outcome != "fail"
                        and a.value["id"] in view and b.value["id"] in view and a.complete_ns < b.invoke_ns
                        and a.value["n"] < b.value["n"] and view[a.value["id"]] > view[b.value["id"]]):
                    reordered.add(b.value["id"])
    out["publisher order"] = ("violated" if reordered else "ok", len(reordered))

    sources = [[(p.token, p.value["id"]) for p in publishes if p.outcome == "ok"],
               *([(s, m) for m, s in ms] for ms in [deliveries, *drained.values()])]
    bad = {s for source in sources for s, m in source for s2, m2 in source if s == s2 and m != m2}
    for ms in drained.values():
        mine = dict((s, m) for m, s in reversed(ms))  # the first id a replica gives a sequence
        last = max(mine, default=0)
        for source in sources:
            first = {}
            for s, m in source:
                first.setdefault(s, m)
            bad |= {s for s, m in first.items() if s <= last and mine.get(s) != m}
    out["replica agreement"] = ("violated" if bad else "ok", len(bad))
    return out


@pytest.mark.parametrize("keeps_delivered", [False, True], ids=["work-queue", "log"])
@pytest.mark.parametrize("faulty", [False, True], ids=["correct", "faulty"])
def test_the_checker_agrees_with_brute_force_on_random_histories(faulty, keeps_delivered):
    rng = random.Random(21 if faulty else 12)
    violated = 0
    for _ in range(1500):
        ops = simulate(rng, faulty)
        expected = brute_force(ops, keeps_delivered)
        got = {f.name: f for f in check_queue(ops, keeps_delivered=keeps_delivered)}
        for name, finding in got.items():
            assert (finding.verdict, finding.count) == expected[name], (name, finding.detail, ops)
        lost = got["lost messages"]
        if lost.verdict == "violated":
            assert int(re.search(r"(\d+) in the middle", lost.detail)[1]) == expected["lost in the middle"]
        violated += any(f.verdict == "violated" for f in got.values())
    if faulty:
        assert violated > 500  # the faults are seen, and the comparison is not only between clean histories
    else:
        assert violated == 0  # a correct queue is never blamed


# -- the workload --------------------------------------------------------------------------------------------------


def test_the_queue_workload_publishes_unique_ids_with_counters_growing_per_publisher_across_windows():
    from durable_chaos.safety.workloads import WORKLOADS

    rate, window_s, concurrency = 1000, 1, 8  # 1000 ops a window, 1 ms apart: the tightest the counter allows
    rng = random.Random(3)
    start_ns, ids, last_n, fetches = 1_700_000_000 * 10**9, set(), {}, 0
    for _ in range(3):
        load = WORKLOADS["queue"](("1a2b3c4d-k00", "1a2b3c4d-k01"), start_ns)
        for seq in range(rate * window_s):
            f, key, value = load.next(rng, seq, seq % concurrency)
            if f == "fetch":
                assert seq > 0  # a window starts with a publish: its session knows the run before it fetches
                fetches += 1
                continue
            assert f == "publish" and key is None and value["publisher"] == seq % concurrency
            assert value["id"].startswith("1a2b3c4d-")  # the run's name, which the nats session streams by
            assert value["id"] not in ids and value["n"] > last_n.get(value["publisher"], 0)
            ids.add(value["id"])
            last_n[value["publisher"]] = value["n"]
        start_ns += rate * window_s * 10**6  # the next window starts when this one's schedule ended
    assert 0.1 < fetches / 3000 < 0.3
