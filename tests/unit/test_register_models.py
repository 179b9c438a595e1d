"""The register models under the linearizability search: hand-made histories with known verdicts (the classic traps),
and the search against a brute-force checker on many small random histories.

Times are in milliseconds.
"""

from __future__ import annotations

import itertools
import random

import pytest

from durable_chaos.safety.checkers import check
from durable_chaos.safety.linearizability import linearizable
from durable_chaos.safety.models import CAS_REGISTER, REGISTER, frozen
from durable_chaos.safety.op import Op

MS = 1_000_000


def op(kind: str, key: str | None, value, start: float, end: float, outcome: str = "ok", process: int = 0) -> Op:
    return Op(kind=kind, key=key, value=value, outcome=outcome, invoke_ns=int(start * MS), complete_ns=int(end * MS),
              process=process)


def cas(key, expected, new, start, end, outcome="ok"):
    return op("cas", key, [expected, new], start, end, outcome)


# -- the classic traps -------------------------------------------------------------------------------------------


def test_a_cas_from_the_current_value_is_linearizable():
    h = [op("write", "k", "a", 0, 1), cas("k", "a", "b", 2, 3), op("read", "k", "b", 4, 5)]
    assert linearizable(h, CAS_REGISTER).verdict == "ok"


def test_a_cas_that_succeeded_from_a_state_that_could_not_exist_is_caught():
    # "b" replaced "a" before the cas was sent: a cas expecting "a" cannot have swapped.
    h = [op("write", "k", "a", 0, 1), op("write", "k", "b", 2, 3), cas("k", "a", "c", 4, 5),
         op("read", "k", "c", 6, 7)]
    found = linearizable(h, CAS_REGISTER)
    assert found.verdict == "violated"
    assert found.stuck.kind == "cas" and "cas k from a to c" in found.detail and "holds 'b'" in found.detail
    assert found.stuck in found.ops


def test_a_failed_cas_did_not_take_effect():
    h = [op("write", "k", "a", 0, 1), cas("k", "x", "b", 2, 3, outcome="fail"), op("read", "k", "a", 4, 5)]
    assert linearizable(h, CAS_REGISTER).verdict == "ok"
    # ... so a read that sees its value read something never written.
    h[-1] = op("read", "k", "b", 4, 5)
    assert linearizable(h, CAS_REGISTER).verdict == "violated"


def test_a_cas_of_unknown_outcome_may_have_swapped_later():
    h = [op("write", "k", "a", 0, 1), cas("k", "a", "b", 2, 3, outcome="info"), op("read", "k", "a", 4, 5),
         op("read", "k", "b", 6, 7)]
    assert linearizable(h, CAS_REGISTER).verdict == "ok"


def test_a_value_swapped_in_twice_is_caught():
    # Two successful cas from "a" in sequence: the second could only swap if "a" came back.
    h = [op("write", "k", "a", 0, 1), cas("k", "a", "b", 2, 3), cas("k", "a", "c", 4, 5)]
    assert linearizable(h, CAS_REGISTER).verdict == "violated"


def test_the_counterexample_shows_who_wrote_the_value_that_came_back():
    # Long after "a" was replaced (several writes later), a read returns it: the write of "a" is shown with the
    # writes that replaced it and the read.
    h = [op("write", "k", "a", 0, 1)] + [op("write", "k", f"v{i}", 10 + i * 10, 11 + i * 10) for i in range(6)]
    h.append(op("read", "k", "a", 100, 101))
    found = linearizable(h, CAS_REGISTER)  # the search's path (the register's zones find it too)
    assert found.verdict == "violated" and found.stuck is h[-1]
    assert h[0] in found.ops and h[-2] in found.ops


def test_a_read_of_a_value_never_written_is_caught():
    h = [op("write", "k", "a", 0, 1), op("read", "k", "zzz", 2, 3)]
    found = linearizable(h, REGISTER)
    assert found.verdict == "violated" and found.stuck.value == "zzz"


def test_a_stale_read_after_a_newer_acknowledged_write_is_caught():
    h = [op("write", "k", "a", 0, 1), op("write", "k", "b", 2, 3), op("read", "k", "a", 4, 5)]
    found = linearizable(h, REGISTER)
    assert found.verdict == "violated" and found.stuck.kind == "read" and "holds 'b'" in found.detail


def test_other_tools_values_are_numbers_and_the_register_is_one_object_without_keys():
    h = [op("write", None, 1, 0, 1), op("read", None, 1, 2, 3), cas(None, 1, 4, 4, 5), op("read", None, 4, 6, 7)]
    assert linearizable(h, CAS_REGISTER).verdict == "ok"
    h.append(op("read", None, 1, 8, 9))
    found = linearizable(h, CAS_REGISTER)
    assert found.verdict == "violated" and "the register" in found.detail


def test_the_report_names_the_model_and_the_stuck_operation():
    h = [op("write", "k", "a", 0, 1), op("write", "k", "b", 2, 3), cas("k", "a", "c", 4, 5),
         op("read", "k", "c", 1000, 1001)]
    h[-1].final = True
    report = check(h, model="cas-register")
    assert report.verdict == "violated" and report.model == "cas-register"
    cx = report.counterexample
    assert cx.checker == "linearizability" and cx.ops[cx.stuck].kind == "cas"


def test_swaps_count_as_writes_for_lost_writes():
    # The final read shows the value "a": the acknowledged swap to "b" after it is lost.
    h = [op("write", "k", "a", 0, 1), cas("k", "a", "b", 2, 3), op("read", "k", "a", 1000, 1001)]
    h[-1].final = True
    report = check(h, model="cas-register")
    assert report.lost_writes == 1 and report.acked_writes == 2


# -- against brute force -----------------------------------------------------------------------------------------


def brute_force(ops: list[Op], model) -> bool:
    """Linearizable iff some order of the operations that must have happened (ok ones) and any subset of those that
    may have (info ones) respects real time and is legal for the model, step by step. Exponential: small only."""
    must = [o for o in ops if o.outcome == "ok" and o.kind in model.fs]
    may = [o for o in ops if o.outcome == "info" and o.kind != "read"]
    for n in range(len(may) + 1):
        for extra in itertools.combinations(may, n):
            chosen = must + list(extra)
            for order in itertools.permutations(chosen):
                if _respects_real_time(order) and _legal(order, model):
                    return True
    return False


def _respects_real_time(order) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b.outcome == "ok" and b.complete_ns < a.invoke_ns:  # b finished before a began, yet comes after
                return False
    return True


def _legal(order, model) -> bool:
    state = model.init()
    for o in order:
        ok, state = model.step(state, o)
        if not ok:
            return False
    return True


def random_history(rng: random.Random, model_name: str, n: int, unique: bool) -> list[Op]:
    """A few concurrent operations on one register, each taking effect at a random moment of its interval on a
    real register; then, half the time, one read's value is changed (often making it illegal). `unique`: every
    write and swap writes a value of its own, as our load does (other tools reuse a few)."""
    values = [f"v{i}" for i in range(n)] if unique else ["a", "b", "c"]
    planned = []
    for i in range(n):
        start = rng.uniform(0, 10)
        end = start + rng.uniform(0.1, 4)
        kind = rng.choice(["read", "write", "cas"] if model_name == "cas-register" else ["read", "write"])
        new = values[i] if unique else rng.choice(values)
        value = new if kind == "write" else [rng.choice(values + [None]), new] if kind == "cas" else None
        o = op(kind, "k", value, start, end, process=i)
        planned.append((rng.uniform(start, end), o))
    state = None
    for _, o in sorted(planned, key=lambda p: p[0]):
        if o.kind == "write":
            state = o.value
        elif o.kind == "read":
            o.value = state
        elif frozen(o.value[0]) == state:
            state = o.value[1]
        else:
            o.outcome = "fail"
    ops = [o for _, o in planned]
    for o in ops:
        if o.kind != "read" and rng.random() < 0.2:
            o.outcome = "info" if o.outcome == "ok" else o.outcome
    reads = [o for o in ops if o.kind == "read"]
    if reads and rng.random() < 0.5:
        rng.choice(reads).value = rng.choice(values + [None])
    return sorted(ops, key=lambda o: o.invoke_ns)


@pytest.mark.parametrize("unique", [True, False], ids=["unique-values", "reused-values"])
@pytest.mark.parametrize("model_name", ["register", "cas-register"])
def test_the_search_agrees_with_brute_force_on_small_histories(model_name, unique):
    model = CAS_REGISTER if model_name == "cas-register" else REGISTER
    rng = random.Random(21)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        h = random_history(rng, model_name, rng.randint(2, 6), unique)
        expected = brute_force(h, model)
        assert (linearizable(h, model).verdict == "ok") == expected, h
        verdicts[expected] += 1
    # Both verdicts were exercised, enough times to mean something.
    assert min(verdicts.values()) > 50, verdicts
