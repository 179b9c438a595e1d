"""What the live view and `status` say about a stage the server keeps retrying (cli/retries.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rich.console import Console
from temporalio.api.common.v1 import ActivityType
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflow.v1 import PendingActivityInfo

from durable_chaos.cli.facts import RunFacts
from durable_chaos.cli.render import facts_view, progress_view
from durable_chaos.cli.retries import retrying
from durable_chaos.contracts import Progress

DOCKER = ("Error response from daemon: driver failed programming external connectivity on endpoint "
          "t-1a2b3c4d-etcd2-1 (" + "5" * 64 + "): Error starting userland proxy: listen tcp4 "
          "127.0.0.1:24002: bind: address already in use\n")


def pending(name: str, attempt: int, failure: str | None = None, next_in_s: float | None = None):
    a = PendingActivityInfo(activity_type=ActivityType(name=name), attempt=attempt)
    if failure is not None:
        a.last_failure.CopyFrom(Failure(message=failure))
    if next_in_s is not None:
        a.next_attempt_schedule_time.FromDatetime(datetime.now(timezone.utc) + timedelta(seconds=next_in_s))
    return a


def screen(progress: Progress, pending_activities) -> str:
    console = Console(width=400, record=True)  # one line a row: the assertions read whole phrases
    console.print(progress_view(progress, "http://ui", retrying(pending_activities)))
    return console.export_text()


def test_a_restore_that_failed_shows_its_attempt_and_dockers_cause():
    text = screen(Progress(subject="etcd"), [pending("run_load_window", 1), pending("restore_fault", 5, DOCKER, 7.6)])
    assert "retrying" in text and "restore_fault: attempt 5" in text, text
    # The cause is Docker's last words, kept whole even though the message is longer than a line.
    assert "bind: address already in use (next attempt in 8 s)" in text, text
    assert "run_load_window" not in text  # running its first attempt: nothing to say


def test_a_run_with_nothing_retried_shows_no_retry_row():
    text = screen(Progress(subject="etcd"), [pending("detect_violation", 1), pending("restore_fault", 2)])
    assert "retrying" not in text, text  # a second attempt the server has no failure for yet says nothing


def test_a_long_failure_keeps_its_end_on_one_line():
    [r] = retrying([pending("inject_fault", 3, "x" * 500 + " the cause")])
    assert r.failure.startswith("…") and r.failure.endswith("the cause") and len(r.failure) == 240
    assert "\n" not in r.failure
    # Cut between words, not inside one: the first word shown is one the message has.
    for shift in range(12):  # wherever the cut falls
        message = "x" * shift + " container start dde40a74ffa7: " + DOCKER
        [r] = retrying([pending("reap_fault", 6, message)])
        assert r.failure.startswith("…") and len(r.failure) <= 240 and r.failure.endswith("address already in use")
        assert r.failure[1:].split()[0] in message.split(), r.failure


def test_status_with_no_worker_shows_what_the_server_is_retrying_too():
    """With no worker serving the run, `status` shows the server's facts: a restore whose worker died shows its
    attempt and the heartbeat timeout that ended the last one."""
    facts = RunFacts(workflow_id="chaos-etcd", run_id="r", status="Running", started_at=datetime.now(timezone.utc),
                     subject="etcd", fault="kill", fault_label="kill", target="etcd2", targets=["etcd2"],
                     stage="restore", fault_state="injected", verdict=None, time_to_detect_s=0.5,
                     time_to_restore_s=None, diagnosis_correct=None)
    console = Console(width=400, record=True)
    console.print(facts_view(facts, None, "http://ui", retrying([pending("restore_fault", 2,
                                                                        "activity Heartbeat timeout")])))
    text = console.export_text()
    assert "restore_fault: attempt 2, the last one failed: activity Heartbeat timeout" in text, text


def test_a_closed_runs_guards_say_what_became_of_each_fault():
    from temporalio.client import WorkflowExecutionStatus as S

    from durable_chaos.cli.guards import GuardState
    from durable_chaos.contracts import FaultState, GuardReport, ReapAction

    now = datetime.now(timezone.utc)
    [retried] = retrying([pending("reap_fault", 4, DOCKER, 2.5)])
    restored = GuardReport(run_status="TERMINATED", fault_state=FaultState.INJECTED, action=ReapAction(
        workflow_id="r", run_id="1", target="etcd1", action="restored", healthy_after=False))
    lines = {
        "restoring": GuardState("g1", "etcd1", S.RUNNING, retrying=[retried], restoring=True).text(now),
        "watching": GuardState("g2", "etcd2", S.RUNNING).text(now),
        "restored": GuardState("g3", "etcd1", S.COMPLETED, report=restored).text(now),
        "own": GuardState("g4", "etcd1", S.COMPLETED, report=GuardReport(run_status="FAILED",
                                                                         fault_state=FaultState.RESTORED)).text(now),
        "gone": GuardState("g5", "etcd3", S.TERMINATED).text(now),
    }
    assert lines["restoring"].splitlines()[0] == "fault guard g1: restoring etcd1, which the run left injected"
    assert "retrying reap_fault: attempt 4" in lines["restoring"] and "address already in use" in lines["restoring"]
    assert lines["watching"] == "fault guard g2: checking whether the run left etcd2 injected"
    assert lines["restored"] == "fault guard g3: etcd1 restored, NOT healthy after"
    assert "nothing to restore" in lines["own"]
    assert lines["gone"] == "fault guard g5: terminated, so nothing restores etcd3: `python starter.py reap` does"
