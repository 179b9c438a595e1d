"""Slow-member detection without Docker: the baseline, the line, the run of checks, and what the diagnosis says."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from activities.claude import user_prompt
from activities.diagnosis import rules_diagnosis
from durable_chaos.contracts import CheckResult, ContainerState, Evidence, MemberHealth, Sign, SlowRule
from durable_chaos.slow import SlowTracker, as_violation, baseline, line_ms

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SERVICES = ["etcd1", "etcd2", "etcd3"]


def check(ms: dict[str, float], at_s: float = 0, unhealthy: tuple[str, ...] = ()) -> CheckResult:
    members = [MemberHealth(service=s, healthy=s not in unhealthy) for s in ms]
    return CheckResult(at=T0 + timedelta(seconds=at_s), ok=not unhealthy, members=members, latency_ms=ms,
                       violations=[f"{s}: unreachable" for s in unhealthy])


def fast(**override: float) -> CheckResult:
    return check({"etcd1": 4.0, "etcd2": 5.0, "etcd3": 6.0} | override)


WATCH = baseline(SlowRule(factor=5, checks=3, floor_ms=100), [fast(), fast(etcd2=300.0), fast(), fast(), fast()])


def test_the_baseline_is_each_members_median_so_one_slow_answer_in_preflight_does_not_move_it():
    assert WATCH.baseline_ms == {"etcd1": 4.0, "etcd2": 5.0, "etcd3": 6.0}


def test_an_unhealthy_answer_is_not_part_of_the_baseline():
    watch = baseline(SlowRule(), [check({"etcd1": 2000.0, "etcd2": 5.0}, unhealthy=("etcd1",)), fast()])
    assert watch.baseline_ms["etcd1"] == 4.0


def test_the_line_is_the_factor_or_the_floor_whichever_is_higher():
    assert line_ms(WATCH, "etcd2") == 105.0  # 5 x 5 ms = 25 ms, but at least 100 ms above the baseline
    slow_base = baseline(SlowRule(factor=5, floor_ms=100), [check({"pg1": 80.0})])
    assert line_ms(slow_base, "pg1") == 400.0
    assert line_ms(WATCH, "nobody") is None


def test_a_member_is_slow_only_after_the_rules_count_of_checks_in_a_row():
    tracker = SlowTracker(WATCH)
    assert tracker.see(fast(etcd2=250.0)) == {}
    assert tracker.see(fast(etcd2=260.0)) == {}
    found = tracker.see(fast(etcd2=240.0))
    assert list(found) == ["etcd2"]
    assert found["etcd2"] == "etcd2: slow: answers in 240 ms, 48x its baseline of 5 ms (3 checks in a row)"


def test_one_fast_answer_breaks_the_run():
    tracker = SlowTracker(WATCH)
    for ms in (250.0, 250.0, 5.0, 250.0, 250.0):
        assert tracker.see(fast(etcd2=ms)) == {}
    assert tracker.see(fast(etcd2=250.0)) != {}


def test_a_member_left_out_of_a_fail_fast_check_keeps_its_run():
    tracker = SlowTracker(WATCH)
    tracker.see(fast(etcd2=250.0))
    tracker.see(check({"etcd1": 4.0}))  # etcd2 did not answer this one
    tracker.see(fast(etcd2=250.0))
    assert list(tracker.see(fast(etcd2=250.0))) == ["etcd2"]


def test_a_member_that_timed_out_is_not_slow_in_that_check_but_keeps_its_run():
    tracker = SlowTracker(WATCH)
    tracker.see(fast(etcd2=250.0))
    timed_out = check({"etcd1": 4.0, "etcd2": 501.0, "etcd3": 6.0}, unhealthy=("etcd2",))
    assert tracker.see(timed_out) == {}  # "no answer (timeout)" says it; not also "slow: answers in 501 ms"
    tracker.see(fast(etcd2=250.0))
    assert list(tracker.see(fast(etcd2=250.0))) == ["etcd2"]


def test_busy_host_noise_under_the_floor_is_never_slow():
    tracker = SlowTracker(WATCH)
    assert all(tracker.see(fast(etcd1=90.0, etcd2=95.0, etcd3=60.0)) == {} for _ in range(20))


def test_a_slow_violation_keeps_the_member_healthy_and_says_slow_with_the_figure():
    tracker = SlowTracker(WATCH)
    for _ in range(3):
        found = tracker.see(fast(etcd2=412.0))
    failed = as_violation(fast(etcd2=412.0), found)
    assert not failed.ok
    assert all(m.healthy for m in failed.members)  # slow is not down
    assert failed.violations == ["etcd2: slow: answers in 412 ms, 82x its baseline of 5 ms (3 checks in a row)"]


@pytest.mark.parametrize("rule", [dict(factor=1), dict(checks=0), dict(floor_ms=-1), dict(nosuch=1)])
def test_a_rule_out_of_range_is_refused(rule):
    with pytest.raises(ValueError):
        SlowRule(**rule)


def slow_evidence(signs: bool) -> Evidence:
    finding = "etcd2: slow: answers in 412 ms, 82x its baseline of 5 ms (3 checks in a row)"
    containers = [ContainerState(service=s, container=f"t-x-{s}-1", running=True, status="running") for s in SERVICES]
    if signs:  # a rate cap's qdisc in etcd2's namespace, as the evidence records it
        containers[1].signs = [Sign(kind="bandwidth", detail="eth0: qdisc tbf 8a3c: root rate 64Kbit")]
    failed = as_violation(fast(etcd2=412.0), {"etcd2": finding})
    return Evidence(subject="etcd", services=SERVICES, containers=containers, timeline=[fast(), failed],
                    health_now=fast(), slow={"etcd2": finding})


def test_the_rules_diagnosis_blames_a_slow_member_with_its_figure_when_nothing_else_shows():
    d = rules_diagnosis(slow_evidence(signs=False))
    assert d.affected_nodes == ["etcd2"]
    assert "slow: answers in 412 ms" in d.root_cause
    assert "3/3 members healthy" in d.summary  # slow, not down: the quorum is whole
    assert "down" not in d.summary


def test_the_rules_diagnosis_names_the_kind_and_how_slow_it_made_the_member():
    d = rules_diagnosis(slow_evidence(signs=True))
    assert d.affected_nodes == ["etcd2"]
    assert "rate-capped" in d.root_cause and "412 ms" in d.root_cause


def test_claudes_prompt_says_which_member_is_slow_and_that_slow_is_not_down():
    prompt = user_prompt(slow_evidence(signs=False), "n0nce")
    assert "Members detected SLOW" in prompt and "answers in 412 ms" in prompt


def test_an_experiment_files_slow_rule_lays_its_fields_over_the_subjects(tmp_path):
    from durable_chaos.experiment.load import load_experiment
    path = tmp_path / "slow.yaml"
    path.write_text("subject: etcd\nslow:\n  factor: 8\nsteps:\n  - fault: bandwidth\n")
    rule = load_experiment(path).run_input.slow
    assert (rule.factor, rule.checks, rule.floor_ms) == (8, 3, 100)
