"""The safety checkers on hand-made histories: each known-bad one must be caught, each known-good one must pass.

Times are in milliseconds; `w`/`r` build a write or a read between two moments. A history ends with the final read
phase (`final=True` reads), as a run's does.
"""

from __future__ import annotations

import random

from durable_chaos.safety.checkers import availability, check, linearizable, lost_writes, tokens
from durable_chaos.safety.history import Op, read_history, write_part

MS = 1_000_000


def w(key: str, value: str, start: float, end: float, outcome: str = "ok", token: int | None = None) -> Op:
    return Op(kind="write", key=key, value=value, outcome=outcome, invoke_ns=int(start * MS), complete_ns=int(end * MS),
              token=token, error=None if outcome == "ok" else "refused")


def r(key: str, value: str | None, start: float, end: float, outcome: str = "ok", token: int | None = None,
      final: bool = False) -> Op:
    return Op(kind="read", key=key, value=value, outcome=outcome, invoke_ns=int(start * MS),
              complete_ns=int(end * MS), token=token, final=final, error=None if outcome == "ok" else "refused")


def final(key: str, value: str | None, at: float = 1000) -> Op:
    return r(key, value, at, at + 1, final=True)


# -- lost writes -------------------------------------------------------------------------------------------------


def test_a_write_replaced_by_a_later_one_is_not_lost():
    h = [w("k", "a", 0, 1), w("k", "b", 2, 3), final("k", "b")]
    assert lost_writes(h).verdict == "ok"


def test_an_acknowledged_write_missing_from_the_final_read_is_lost():
    h = [w("k", "a", 0, 1), w("k", "b", 2, 3), final("k", "a")]
    found = lost_writes(h)
    assert found.verdict == "violated" and found.count == 1
    assert [(op.value, op.final) for op in found.ops] == [("a", False), ("b", False), ("a", True)]


def test_a_key_that_holds_nothing_loses_every_acknowledged_write():
    h = [w("k", "a", 0, 1), w("k", "b", 2, 3), w("k", "c", 4, 5, outcome="fail"), final("k", None)]
    found = lost_writes(h)
    assert found.verdict == "violated" and found.count == 2


def test_concurrent_writes_may_end_in_either_order():
    h = [w("k", "a", 0, 10), w("k", "b", 5, 6), final("k", "a")]
    assert lost_writes(h).verdict == "ok"


def test_an_info_write_that_landed_late_replaces_an_acknowledged_one():
    # "x" timed out before "b" was even sent, but may have taken effect afterwards.
    h = [w("k", "x", 0, 1, outcome="info"), w("k", "b", 2, 3), final("k", "x")]
    assert lost_writes(h).verdict == "ok"


def test_a_write_reported_failed_must_not_show_up():
    h = [w("k", "a", 0, 1), w("k", "x", 2, 3, outcome="fail"), final("k", "x")]
    assert lost_writes(h).verdict == "violated"


def test_a_failed_final_read_makes_lost_writes_unknown():
    h = [w("k", "a", 0, 1), r("k", None, 1000, 1001, outcome="fail", final=True)]
    assert lost_writes(h).verdict == "unknown"


# -- linearizability ---------------------------------------------------------------------------------------------


def test_reads_of_the_latest_value_are_linearizable():
    h = [w("k", "a", 0, 1), r("k", "a", 2, 3), w("k", "b", 4, 5), r("k", "b", 6, 7), final("k", "b")]
    assert linearizable(h).verdict == "ok"


def test_a_read_overlapping_a_write_may_see_either_value():
    h = [w("k", "a", 0, 1), w("k", "b", 2, 10), r("k", "a", 3, 4), r("k", "b", 5, 6), final("k", "b")]
    assert linearizable(h).verdict == "ok"


def test_a_stale_read_is_caught():
    h = [w("k", "a", 0, 1), w("k", "b", 2, 3), r("k", "a", 4, 5), final("k", "b")]
    found = linearizable(h)
    assert found.verdict == "violated"
    stale = [op for op in found.ops if op.kind == "read" and not op.final]
    assert [op.value for op in stale] == ["a"], found.ops
    assert "k" in found.detail


def test_a_value_that_comes_back_is_not_linearizable():
    # Each read alone is a legal value, but once "b" was read, "a" cannot be read again with no write between.
    h = [w("k", "a", 0, 1), w("k", "b", 2, 20), r("k", "b", 3, 4), r("k", "a", 5, 6), final("k", "b")]
    assert linearizable(h).verdict == "violated"


def test_reading_a_value_never_written_is_not_linearizable():
    assert linearizable([w("k", "a", 0, 1), r("k", "zz", 2, 3)]).verdict == "violated"


def test_reading_nothing_before_any_write_is_fine_and_after_one_is_not():
    assert linearizable([r("k", None, 0, 1), w("k", "a", 2, 3), r("k", "a", 4, 5)]).verdict == "ok"
    assert linearizable([w("k", "a", 0, 1), r("k", None, 2, 3)]).verdict == "violated"


def test_an_info_write_that_took_effect_explains_a_later_read():
    h = [w("k", "a", 0, 1), w("k", "x", 2, 3, outcome="info"), r("k", "x", 50, 51), final("k", "x")]
    assert linearizable(h).verdict == "ok"


def test_an_info_write_that_did_not_take_effect_is_fine_too():
    h = [w("k", "a", 0, 1), w("k", "x", 2, 3, outcome="info"), r("k", "a", 50, 51), final("k", "a")]
    assert linearizable(h).verdict == "ok"


def test_an_info_write_cannot_take_effect_before_it_was_sent():
    h = [w("k", "a", 0, 1), r("k", "x", 2, 3), w("k", "x", 10, 11, outcome="info")]
    assert linearizable(h).verdict == "violated"


def test_an_info_write_takes_effect_once_only():
    # "x" landed (the first read saw it), then "b" replaced it: "x" cannot reappear.
    h = [w("k", "x", 0, 1, outcome="info"), r("k", "x", 2, 3), w("k", "b", 4, 5), r("k", "x", 6, 7)]
    assert linearizable(h).verdict == "violated"


def test_keys_are_independent_registers():
    h = [w("a", "1", 0, 1), w("b", "2", 0, 1), r("a", "1", 2, 3), r("b", "2", 2, 3)]
    assert linearizable(h).verdict == "ok"


def test_an_exhausted_budget_is_unknown_not_ok():
    # Many concurrent writes and a read of the first one written: the search must try orders. Values written more
    # than once (as other tools' histories do) leave the search as the only way.
    h = [w("k", f"v{i % 6}", 0, 200) for i in range(12)] + [r("k", "v0", 101, 102), r("k", "v5", 103, 104),
                                                             r("k", "v0", 105, 106)]
    assert linearizable(h, budget=5).verdict == "unknown"
    assert linearizable(h).verdict == "ok"
    # Each value was written twice: it cannot come back a third time.
    assert linearizable(h + [r("k", "v1", 107, 108), r("k", "v0", 109, 110)]).verdict == "violated"


def test_values_written_once_are_decided_without_a_search():
    h = [w("k", f"v{i}", 0, 100) for i in range(12)] + [r("k", "v0", 101, 102), r("k", "v11", 103, 104)]
    assert linearizable(h, budget=5).verdict == "violated"  # v0 cannot come back after v11


def test_a_large_concurrent_history_is_decided():
    # A random but legal history of a real register, up to about ten operations in flight at once (a slow system
    # under load; per key a run sees far fewer): the checker must say ok, and find a stale read put into it.
    rng = random.Random(7)
    value, t, h = None, 0.0, []
    for i in range(3000):
        t += rng.uniform(0.05, 0.3)
        start, end = t - rng.uniform(0, 1), t + rng.uniform(0, 1)  # the effect at t, somewhere in [start, end]
        if rng.random() < 0.5:
            value = f"v{i}"
            h.append(w("k", value, start, end))
        else:
            h.append(r("k", value, start, end))
    assert linearizable(h).verdict == "ok"
    stale = r("k", h[0].value, t + 10, t + 11)
    found = linearizable(h + [stale])
    assert found.verdict == "violated" and found.ops[-1] is stale


# -- tokens --------------------------------------------------------------------------------------------------------


def test_revisions_that_grow_pass():
    h = [w("a", "1", 0, 1, token=5), w("b", "2", 2, 3, token=6), r("a", "1", 4, 5, token=5)]
    assert tokens(h, "revision").verdict == "ok"


def test_a_revision_that_goes_back_is_caught():
    h = [w("a", "1", 0, 1, token=9), w("b", "2", 2, 3, token=7)]
    found = tokens(h, "revision")
    assert found.verdict == "violated" and "went back" in found.detail
    assert [op.token for op in found.ops] == [9, 7]


def test_concurrent_writes_may_get_tokens_in_either_order():
    assert tokens([w("a", "1", 0, 10, token=9), w("b", "2", 2, 3, token=7)], "revision").verdict == "ok"


def test_a_token_handed_out_twice_is_caught():
    found = tokens([w("a", "1", 0, 1, token=4), w("b", "2", 0, 1, token=4)], "txid")
    assert found.verdict == "violated" and "twice" in found.detail


def test_a_read_reporting_another_token_than_its_write_got_is_caught():
    found = tokens([w("a", "1", 0, 1, token=4), r("a", "1", 2, 3, token=3)], "stream sequence")
    assert found.verdict == "violated"


def test_a_gap_in_acknowledged_sequences_is_caught():
    h = [w("a", "1", 0, 1, token=1), w("a", "2", 2, 3, token=2), w("a", "3", 4, 5, token=5)]
    found = tokens(h, "stream sequence", gapless=True)
    assert found.verdict == "violated" and "gap after 2, before 5" in found.detail


def test_a_gap_explained_by_writes_of_unknown_outcome_is_fine():
    h = [w("a", "1", 0, 1, token=1), w("a", "x", 1, 2, outcome="info"), w("a", "2", 2, 3, token=3)]
    assert tokens(h, "stream sequence", gapless=True).verdict == "ok"
    assert tokens(h[:1] + h[2:], "stream sequence", gapless=True).verdict == "violated"


# -- availability and the whole report -----------------------------------------------------------------------------


def test_availability_figures_per_fault_phase():
    h = [w("k", str(i), i * 10, i * 10 + 2) for i in range(10)]  # ok every 10 ms until 92 ms
    h += [w("k", "t", 100, 600, outcome="info"), w("k", "f", 110, 111, outcome="fail")]  # the fault: 100..700
    h += [w("k", str(i), i * 10, i * 10 + 4) for i in range(70, 80)]
    a = availability(h, fault_start_ns=100 * MS, fault_end_ns=700 * MS)
    assert a.longest_gap_ms == 612.0  # from the answer at 92 ms to the one at 704 ms
    assert a.error_rate == round(2 / 22, 4)
    assert (a.before.ops, a.during.ops, a.during.errors, a.after.ops) == (10, 2, 2, 10)
    assert a.before.p50_ms == 2.0 and a.after.p99_ms == 4.0 and a.during.p99_ms > 400


def test_an_operation_in_flight_as_the_fault_begins_counts_during_it():
    """A write sent 8 ms before the inject began and failed by the kill 112 ms later (CI, the Redis folder) is the
    fault's doing: counted before the fault, it made the steady state look broken."""
    h = [w("k", str(i), i * 10, i * 10 + 2) for i in range(10)]
    h.append(w("k", "in flight", 92, 212, outcome="info"))  # sent before the fault began at 100, failed in it
    a = availability(h, fault_start_ns=100 * MS, fault_end_ns=700 * MS)
    assert (a.before.ops, a.before.errors, a.during.ops, a.during.errors) == (10, 0, 1, 1)


def test_report_names_the_first_violation_and_counts():
    h = [w("k", "a", 0, 1, token=1), w("k", "b", 2, 3, token=2), r("k", "a", 4, 5, token=1), final("k", "a")]
    report = check(h, token_name="revision")
    assert report.verdict == "violated"
    assert (report.ops, report.acked_writes, report.lost_writes, report.keys) == (3, 2, 1, 1)
    assert report.counterexample.checker == "lost writes"
    assert [c.verdict for c in report.checks] == ["violated", "violated", "ok"]


def test_report_without_data_operations_is_unknown():
    ops = [Op(kind="op", key=None, value=None, outcome="ok", invoke_ns=0, complete_ns=MS)]
    report = check(ops)
    assert report.verdict == "unknown" and "declares no data operations" in report.reasons[0]
    assert report.availability.before.ops == 1


def test_a_clean_history_is_ok():
    h = [w("k", "a", 0, 1, token=1), r("k", "a", 2, 3, token=1), final("k", "a")]
    report = check(h, token_name="revision")
    assert report.verdict == "ok" and not report.reasons and report.counterexample is None


def test_history_parts_round_trip(tmp_path):
    ops = [w("k", "a", 0, 1, token=3), r("k", None, 2, 3, outcome="info"), final("k", "a")]
    write_part(tmp_path / "0001.jsonl.gz", ops[:2])
    write_part(tmp_path / "final.jsonl.gz", ops[2:])
    assert read_history(tmp_path).ops == ops


def test_runs_a_minute_apart_write_to_keys_of_their_own():
    """Run ids are time-ordered (UUIDv7): two runs started within a minute share their first 8 characters. A run
    that reused another's keys would read the other's values and report a stale read that never happened."""
    import dataclasses

    from temporalio.testing import ActivityEnvironment

    from activities.load import run_keys

    keys = []
    for run_id in ("01a1ff5a-1111-7000-8000-000000000001", "01a1ff5a-2222-7000-8000-000000000002"):
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_id="chaos-etcd", workflow_run_id=run_id)
        keys.append(set(env.run(run_keys)))
    assert keys[0] and keys[1] and not keys[0] & keys[1]


def test_a_history_known_to_be_incomplete_cannot_prove_a_loss():
    """A load window lost with its worker wrote no part, but its writes may have landed: the final read then finds
    a value nobody in the history wrote. That is unknown, never `violated`."""
    ops = [w("k", "a", 0, 1), final("k", "from-the-lost-window")]
    assert check(ops).verdict == "violated"  # complete as far as anyone knows: a lost write
    report = check(ops, unknown_because=["the history holds 3 of the run's 4 load windows"])
    assert report.verdict == "unknown" and report.lost_writes == 1
    assert report.reasons[0].startswith("the history holds 3 of")
