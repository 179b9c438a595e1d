"""The list-append checker (Elle-style) on hand-made histories with known verdicts, legal and illegal, and against a
brute-force checker on small random histories.

Times are in milliseconds; `t(start, end, *micro_ops)` builds a transaction; micro-ops are `a(key, value)` (append)
and `r(key, list)` (read). `final` reads a key in the final phase.
"""

from __future__ import annotations

import itertools
import random

import pytest

from durable_chaos.safety.list_append import FORBIDDEN, check_list_append
from durable_chaos.safety.op import Op
from durable_chaos.safety.workloads import WORKLOADS

MS = 1_000_000


def a(key: str, value: int) -> list:
    return ["append", key, value]


def r(key: str, values: list[int] | None) -> list:
    return ["r", key, values]


def t(start: float, end: float, *micro_ops: list, outcome: str = "ok", process: int = 0, final: bool = False) -> Op:
    value = [list(m) for m in micro_ops]
    if outcome != "ok":  # a failed or unknown transaction's value is what was asked: its reads are not known
        value = [[f, k, v if f == "append" else None] for f, k, v in value]
    return Op(kind="txn", outcome=outcome, invoke_ns=int(start * MS), complete_ns=int(end * MS), value=value,
              process=process, final=final)


def final(key: str, values: list[int], at: float = 1000) -> Op:
    return t(at, at + 1, r(key, values), final=True)


def findings(history: list[Op], isolation: str = "strict-serializable") -> dict:
    return {f.name: f for f in check_list_append(history, isolation=isolation)}


def verdicts(history: list[Op], isolation: str = "strict-serializable") -> dict[str, str]:
    return {name: f.verdict for name, f in findings(history, isolation).items()}


# -- legal histories ------------------------------------------------------------------------------------------------


def test_a_legal_concurrent_history_passes_at_every_level():
    h = [
        t(0, 10, a("x", 1), r("y", []), process=0),
        t(2, 12, a("y", 1), r("x", [1]), process=1),  # concurrent with the first: it may see its append
        t(5, 20, r("x", [1]), r("y", [1]), process=2),
        t(21, 30, a("x", 2), a("x", 3), r("x", [1, 2, 3]), process=0),  # sees its own appends
        t(25, 35, a("y", 4), outcome="info", process=1),  # nobody saw it: may not have happened
        t(31, 40, r("x", [1, 2, 3]), a("y", 5), process=2),
        final("x", [1, 2, 3]), final("y", [1, 5]),
    ]
    for level in FORBIDDEN:
        assert verdicts(h, level) == {"lost appends": "ok", "transactions": "ok"}, level
    summary = findings(h)["transactions"]
    assert "7 committed transactions of 8" in summary.detail


def test_an_info_transaction_some_read_saw_committed():
    h = [t(0, 10, a("x", 1), outcome="info"), t(20, 30, r("x", [1])), final("x", [1])]
    assert verdicts(h) == {"lost appends": "ok", "transactions": "ok"}
    assert "3 committed" in findings(h)["transactions"].detail


# -- cycles ---------------------------------------------------------------------------------------------------------


def test_g1c_each_transaction_saw_the_other():
    h = [t(0, 10, a("x", 1), r("y", [2]), process=0), t(0, 10, a("y", 2), r("x", [1]), process=1),
         final("x", [1]), final("y", [2])]
    got = findings(h, "read-committed")
    assert got["G1c"].verdict == "violated" and got["transactions"].verdict == "violated"
    assert got["G1c"].anomaly == "G1c"
    assert "T1 < T2 because T2 read T1's append of 1 to x (wr)" in got["G1c"].detail
    assert "T2 < T1 because T1 read T2's append of 2 to y (wr)" in got["G1c"].detail
    # The cycle is drawn: both transactions, both wr edges, in plain words.
    assert sorted((e[0].process, e[1].process, e[2]) for e in got["G1c"].cycle) == [(0, 1, "wr"), (1, 0, "wr")]
    assert all(e[3] for e in got["G1c"].cycle)


def test_g_single_a_read_saw_half_of_a_transaction():
    h = [t(0, 10, a("x", 1), a("y", 1), process=0),
         t(0, 10, r("x", []), r("y", [1]), process=1),  # saw the append to y, not the one to x
         final("x", [1]), final("y", [1])]
    got = findings(h, "snapshot-isolation")
    assert got["G-single"].verdict == "violated"
    assert "T2 < T1 because T2 read x without T1's append of 1 (rw)" in got["G-single"].detail
    assert sorted(e[2] for e in got["G-single"].cycle) == ["rw", "wr"]
    # Read committed allows read skew: reported with a note, not violated.
    rc = findings(h, "read-committed")
    assert rc["G-single"].verdict == "ok" and "read-committed allows" in rc["G-single"].detail
    assert rc["transactions"].verdict == "ok"


def test_g2_item_write_skew_is_allowed_by_snapshot_isolation_only():
    h = [t(0, 10, r("x", []), a("y", 1), process=0), t(0, 10, r("y", []), a("x", 2), process=1),
         final("x", [2]), final("y", [1])]
    assert verdicts(h, "snapshot-isolation")["G2-item"] == "ok"
    assert verdicts(h, "serializable")["G2-item"] == "violated"
    assert verdicts(h, "repeatable-read")["G2-item"] == "violated"
    assert sorted(e[2] for e in findings(h)["G2-item"].cycle) == ["rw", "rw"]


def test_g0_two_transactions_interleave_their_appends():
    h = [t(0, 10, a("x", 1), a("y", 1), process=0), t(0, 10, a("x", 2), a("y", 2), process=1),
         t(20, 30, r("x", [1, 2]), r("y", [2, 1]), process=2), final("x", [1, 2]), final("y", [2, 1])]
    got = findings(h, "read-committed")
    assert got["G0"].verdict == "violated"
    assert {e[2] for e in got["G0"].cycle} == {"ww"}
    assert "T2 appended 2 to x right after T1's 1" in got["G0"].detail


def test_a_stale_read_after_an_acknowledged_append_is_a_realtime_cycle():
    h = [t(0, 10, a("x", 1)), t(20, 30, r("x", [])), final("x", [1])]
    got = findings(h, "strict-serializable")
    assert got["G-single-realtime"].verdict == "violated"
    assert "T1 completed before T2 began (rt)" in got["G-single-realtime"].detail
    # Serializable alone does not promise realtime order.
    assert verdicts(h, "serializable")["G-single-realtime"] == "ok"


# -- reads that are wrong without a cycle ----------------------------------------------------------------------------


def test_g1a_a_read_saw_a_failed_append():
    h = [t(0, 10, a("x", 1), outcome="fail"), t(20, 30, r("x", [1])), final("x", [1])]
    got = findings(h, "read-committed")
    assert got["G1a"].verdict == "violated"
    assert "T2 read T1's append of 1 to x, and T1 failed" in got["G1a"].detail


def test_g1b_a_read_saw_an_intermediate_append():
    h = [t(0, 10, a("x", 1), a("x", 2), process=0), t(0, 10, r("x", [1]), process=1), final("x", [1, 2])]
    got = findings(h, "read-committed")
    assert got["G1b"].verdict == "violated"
    assert "which T1 followed with 2" in got["G1b"].detail


def test_internal_inconsistency_a_transaction_missed_its_own_append():
    h = [t(0, 10, r("x", []), a("x", 1), r("x", [])), final("x", [1])]
    got = findings(h, "read-committed")
    assert got["internal inconsistency"].verdict == "violated"
    # A read after an append with no read before it must end with that append.
    h = [t(0, 10, a("x", 1), r("x", [1, 7])), t(0, 10, a("x", 7)), final("x", [1, 7])]
    assert "internal inconsistency" in verdicts(h)


def test_incompatible_orders_duplicates_and_values_nobody_wrote():
    h = [t(0, 10, a("x", 1)), t(0, 10, a("x", 2)), t(0, 10, a("x", 3)),
         t(20, 30, r("x", [1, 2])), t(20, 30, r("x", [1, 3])), final("x", [1, 3])]
    got = findings(h, "read-committed")
    assert got["incompatible order"].verdict == "violated"
    assert "T4 read x -> [1 2] but T5 read x -> [1 3]" in got["incompatible order"].detail
    h = [t(0, 10, a("x", 1)), t(20, 30, r("x", [1, 1])), t(20, 30, r("y", [9])), final("x", [1])]
    got = verdicts(h, "read-committed")
    assert got["duplicates"] == "violated" and got["values never written"] == "violated"


def test_lost_update_both_read_the_same_version_and_appended():
    h = [t(0, 10, r("x", []), a("x", 1), process=0), t(0, 10, r("x", []), a("x", 2), process=1),
         final("x", [1, 2])]
    got = findings(h, "snapshot-isolation")
    assert got["lost update"].verdict == "violated" and got["lost update"].count == 1
    assert "T1, T2 read the same version of x and each appended to it" in got["lost update"].detail
    assert verdicts(h, "read-committed")["lost update"] == "ok"


def test_reads_as_long_but_different_are_not_the_same_version():
    # A failover lost 2 and 5; T5 then read a list as long as the one T3 read: a different version, so no lost
    # update (the orders disagree instead).
    h = [t(0, 10, a("x", 1)), t(11, 12, a("x", 2)), t(20, 30, r("x", [1, 2]), a("x", 5)), t(40, 41, a("x", 3)),
         t(50, 60, r("x", [1, 3]), a("x", 6)), final("x", [1, 3, 6])]
    got = verdicts(h, "serializable")
    assert "lost update" not in got and got["incompatible order"] == "violated"


def test_an_acknowledged_append_missing_from_the_final_read_is_lost():
    # What a failover with asynchronous replication looks like: T1's append was acknowledged, then gone.
    h = [t(0, 10, a("x", 1)), t(20, 30, a("x", 2)), t(40, 50, r("x", [2])), final("x", [2])]
    got = findings(h, "serializable")
    lost = got["lost appends"]
    assert lost.verdict == "violated" and lost.count == 1
    assert "1 of 2 acknowledged appends is missing from the final read of their key (1 key)" in lost.detail
    assert "first: 1, appended to x by T1" in lost.detail
    assert [op.final for op in lost.ops] == [False, True]
    # Realtime says T1 came first, yet its append is after T2's in what was read: strict serializability breaks.
    assert verdicts(h, "strict-serializable")["G0-realtime"] == "violated"


def test_a_key_the_final_phase_could_not_read_leaves_lost_appends_unknown():
    failed = t(1000, 1001, r("y", None), outcome="fail", final=True)
    got = verdicts([t(0, 10, a("x", 1)), t(0, 10, a("y", 2)), t(20, 30, r("x", [1])), final("x", [1]), failed])
    assert got["lost appends"] == "unknown" and got["transactions"] == "ok"
    # Without a final read phase (other tools' histories) the dependencies alone are checked.
    assert verdicts([t(0, 10, a("x", 1)), t(20, 30, r("x", [1]))]) == {"transactions": "ok"}


def test_a_spent_budget_says_unknown_never_a_guess():
    h = [t(0, 10, r("x", []), a("y", 1), process=0), t(0, 10, r("y", []), a("x", 2), process=1),
         final("x", [2]), final("y", [1])]
    got = {f.name: f for f in check_list_append(h, isolation="serializable", budget=3)}
    assert got["transactions"].verdict == "unknown" and "budget" in got["transactions"].detail


def test_a_value_appended_twice_leaves_the_history_unknown():
    got = findings([t(0, 10, a("x", 1)), t(0, 10, a("x", 1)), t(20, 30, r("x", [1])), final("x", [1])])
    assert [(f.name, f.verdict) for f in got.values()] == [("transactions", "unknown")]
    assert "values appended more than once (1, e.g. 1 to x by T1 and T2)" in got["transactions"].detail


def test_an_unknown_isolation_level_is_not_checked():
    assert verdicts([t(0, 1, a("x", 1))], "causal") == {"transactions": "unknown"}


# -- against brute force -------------------------------------------------------------------------------------------


def _random_history(rng: random.Random) -> list[Op]:
    """A few transactions on two keys, run by a simulated database that is correct, runs on snapshots, reads stale
    lists, or drops acknowledged appends; some outcomes unknown (applied or not) or failed."""
    mode = rng.choice(["serial", "snapshot", "stale", "lossy"])
    values = itertools.count(1)
    txns = []
    for _ in range(rng.randint(2, 7)):
        start = rng.randint(0, 40)
        micro = [a(rng.choice("xy"), next(values)) if rng.random() < 0.5 else r(rng.choice("xy"), None)
                 for _ in range(rng.randint(1, 3))]
        txns.append((start, start + rng.randint(1, 15), micro, rng.uniform(0, 1)))
    state: dict[str, list[int]] = {"x": [], "y": []}
    snapshots = [(-1, {"x": [], "y": []})]
    history = []
    for start, end, micro, at in sorted(txns, key=lambda x: x[0] + x[3] * (x[1] - x[0])):
        roll = rng.random()
        outcome = "ok" if roll < 0.7 else "info" if roll < 0.85 else "fail"
        applied = outcome == "ok" or outcome == "info" and rng.random() < 0.5
        seen = {k: list(v) for k, v in (next(s for when, s in reversed(snapshots) if when < start)
                                        if mode == "snapshot" else state).items()}
        done = []
        for f, k, value in micro:
            if f == "append":
                seen[k].append(value)
                done.append(a(k, value))
            else:
                got = list(seen[k])
                if mode == "stale" and got and rng.random() < 0.3:
                    got = got[:-1]
                done.append(r(k, got))
        if applied:
            for f, k, v in done:
                if f == "append" and not (mode == "lossy" and rng.random() < 0.2):
                    state[k].append(v)
        snapshots.append((start + at * (end - start), {k: list(v) for k, v in state.items()}))
        history.append(t(start, end, *done, outcome=outcome, process=len(history)))
    return sorted(history, key=lambda op: op.invoke_ns)


def _serializable(history: list[Op], realtime: bool) -> bool:
    """Brute force: some subset of the unknown transactions and some order of the committed ones (that respects
    realtime, if asked) makes every read of every ok transaction right."""
    ok = [op for op in history if op.outcome == "ok"]
    info = [op for op in history if op.outcome == "info"]
    for n in range(len(info) + 1):
        for chosen in itertools.combinations(info, n):
            txns = ok + list(chosen)
            preds = {id(b): [x for x in txns if realtime and x.outcome == "ok" and x.complete_ns < b.invoke_ns]
                     for b in txns}
            if _order_exists(txns, preds, frozenset(), {}):
                return True
    return False


def _order_exists(txns: list[Op], preds: dict, placed: frozenset, state: dict) -> bool:
    if len(placed) == len(txns):
        return True
    for op in txns:
        if id(op) in placed or any(id(p) not in placed for p in preds[id(op)]):
            continue
        lists = {k: list(v) for k, v in state.items()}
        legal = True
        for f, k, v in op.value:
            if f == "append":
                lists.setdefault(k, []).append(v)
            elif op.outcome == "ok" and lists.get(k, []) != (v or []):
                legal = False
                break
        if legal and _order_exists(txns, preds, placed | {id(op)}, lists):
            return True
    return False


@pytest.mark.parametrize("level", ["strict-serializable", "serializable"])
def test_agrees_with_brute_force_on_small_random_histories(level):
    rng = random.Random(21)
    outcomes = {True: 0, False: 0}
    for i in range(3000):
        history = _random_history(rng)
        expected = _serializable(history, realtime=level == "strict-serializable")
        got = findings(history, level)["transactions"]
        assert got.verdict != "unknown"
        assert (got.verdict == "ok") == expected, (i, got.detail, history)
        outcomes[expected] += 1
    # Both kinds are well represented, or the comparison proves little.
    assert min(outcomes.values()) > 300, outcomes


@pytest.mark.parametrize("level", sorted(FORBIDDEN))
def test_a_history_from_a_correct_database_passes_at_every_level(level):
    rng = random.Random(level)
    for _ in range(200):
        history = _random_history(rng)
        if _serializable(history, realtime=True):
            assert findings(history, level)["transactions"].verdict == "ok"


# -- the workload ---------------------------------------------------------------------------------------------------


def test_the_workload_appends_values_unique_in_the_run_over_a_few_keys_at_a_time():
    keys = tuple(f"k{i:02d}" for i in range(32))
    rng = random.Random(1)
    appended, used = [], []
    for window in range(30):  # one-second windows
        workload = WORKLOADS["list-append"](keys, 1_700_000_000_000_000_000 + window * 10**9)
        window_keys = set()
        for seq in range(200):
            f, key, micro = workload.next(rng, seq, seq % 10)
            assert f == "txn" and key is None and 1 <= len(micro) <= 4
            assert all(m[0] == "r" and m[2] is None or m[0] == "append" and isinstance(m[2], int) for m in micro)
            appended += [m[2] for m in micro if m[0] == "append"]
            window_keys |= {m[1] for m in micro}
        used.append(window_keys)
    assert len(appended) == len(set(appended)) > 1000
    assert max(appended) < 2**63  # a PostgreSQL bigint
    assert all(len(k) <= 8 and k <= set(keys) for k in used)
    assert len(set().union(*used)) > 8  # the keys move on
    assert len(used[9] & used[10]) == 4 and used[0] & used[25] == set()  # by half of them every ten seconds
