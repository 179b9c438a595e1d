"""The chaos metrics a finished run records: runs by verdict, time to detect and restore, data safety violations.

Recorded from workflow code through `workflow.metric_meter()`: it records nothing while a run replays (after a
worker crash the counters do not count the run twice) and adds no event to the history. The worker exports them
on its Prometheus endpoint when CHAOS_METRICS_ADDRESS is set (runtime/metrics.py); without it they go nowhere.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import ChaosReport

RUNS = "chaos_runs"
TIME_TO_DETECT = "chaos_time_to_detect_seconds"
TIME_TO_RESTORE = "chaos_time_to_restore_seconds"
SAFETY_VIOLATIONS = "chaos_safety_violations"
FAULTS_INJECTED = "chaos_faults_injected"  # a gauge the worker keeps (runtime/metrics.py), not a run

# Seconds. Detection is sub-second for a kill and a few seconds for faults seen through timeouts; a restore is a
# `docker start` and a rejoin (about 1 s for etcd) up to a Patroni failover (tens of seconds).
TTD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
TTR_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)


def record_run(report: ChaosReport) -> None:
    """Count one finished run. Labels stay few-valued: the fault's kind, not its label with parameters."""
    meter = workflow.metric_meter()
    labels = {"subject": report.subject, "fault": report.fault}
    meter.create_counter(RUNS, "chaos runs that ended with a report").add(1, {**labels, "verdict": report.verdict})
    if report.time_to_detect_s is not None:
        meter.create_histogram_float(TIME_TO_DETECT, "fault injected until an invariant check saw it",
                                     "s").record(report.time_to_detect_s, labels)
    if report.time_to_restore_s is not None:
        meter.create_histogram_float(TIME_TO_RESTORE, "restore started until every invariant held again",
                                     "s").record(report.time_to_restore_s, labels)
    # Added (0 when none) on every run with a safety check, so the series exists and a dashboard shows 0, not
    # "no data", until the first violation.
    if report.safety is not None:
        meter.create_counter(SAFETY_VIOLATIONS, "runs whose data safety check found lost or non-linearizable "
                             "data").add(int(report.safety.verdict == "violated"), labels)
