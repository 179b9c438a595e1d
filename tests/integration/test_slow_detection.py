"""Gray failures on a real etcd cluster: a member that still answers, only far slower, is detected as slow (with the
figure, not as down), diagnosed as slow, and healthy again only once it is fast again."""

from __future__ import annotations

from durable_chaos.contracts import FaultState
from tests.conftest import run_to_report

PORT_RANGE = (44000, 44990)


async def test_a_bandwidth_cap_on_a_member_is_detected_as_slow_and_diagnosed_so(client, task_queue, etcd,
                                                                              own_state_dir):
    report = await run_to_report(client, task_queue, etcd, "slow-bandwidth", fault="bandwidth",
                                 fault_params={"rate": "256kbit"}, target="follower", max_fault_s=40,
                                 check_timeout_s=2.0)  # a cap this low can push answers past the default 0.5 s
    assert report.fault_state == FaultState.RESTORED
    detected = next((r for r in report.reasons if r.startswith("detected after")), None)
    capped = report.target
    print(detected, "|", report.diagnosis.summary)  # the figures docs/runs.md quotes come from this line
    assert detected is not None and f"{capped}: slow: answers in " in detected, report.reasons
    # Slow is not down: the capped member answered every check, so no violation says it did not.
    assert f"{capped}: no answer" not in detected and f"{capped}: unhealthy" not in detected
    assert report.diagnosis.affected_nodes == [capped], report.diagnosis
    assert "slow: answers in" in report.diagnosis.root_cause and "rate-capped" in report.diagnosis.root_cause
    assert report.time_to_detect_s is not None and report.time_to_restore_s is not None


async def test_a_rule_that_asks_for_more_than_the_fault_does_leaves_it_undetected(client, task_queue, etcd,
                                                                                  own_state_dir):
    """The rule is the run's own: at 1000x its baseline nothing short of down is slow, and the run says the fault
    went undetected (it still undoes it)."""
    report = await run_to_report(client, task_queue, etcd, "slow-rule", fault="bandwidth",
                                 fault_params={"rate": "256kbit"}, target="follower", max_fault_s=40, detect_timeout_s=6,
                                 check_timeout_s=2.0,
                                 slow={"factor": 1000, "checks": 3, "floor_ms": 5000})
    assert report.fault_state == FaultState.RESTORED
    assert report.detected_at is None
    assert "the fault was not detected within 6s" in report.reasons
