"""One table of activity options per stage: timeouts, heartbeats and retries, in one place instead of one per call.

Each entry is a `workflow.ActivityConfig` built from the run's input (most timeouts grow with a user's setting).
The values are part of what a run promises: the restore retries for as long as it takes, a load window lost with its
worker runs once more at once and a failed one never again, a stage gives up after about 5 s of retries.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import ChaosInput, ErrorType, SubjectRef
    from durable_chaos.ids import host_queue

# A dead worker is noticed when its heartbeats stop for this long; the worker heartbeats every activity on a timer
# (runtime/heartbeats.py) and one leaves at least every 0.4 s. With the server's timer shift at 10 ms
# (runtime/devserver.py) the server times the attempt out when the heartbeat timeout is up, and the retry runs 0.1 s
# later (bench/resume.py; measured with 1 s: 0.99-1.04 s after a SIGKILL). 1 s held beside stress-ng, but with 20
# etcd copies on one 2-core host the worker's loop waits for a core most of each second, and 1 s lost 53-90
# activities to heartbeat timeouts per sweep step (bench --parallel 20,20,20); 1.2 s leaves 0.8 s for a late one.
HEARTBEAT = timedelta(seconds=1.2)
# The first retry comes this soon: after a SIGKILL it is the attempt that resumes the run. With 0.1 s the retry was
# due 0.05-0.07 s after the server timed the attempt out, with 0.02 s within 0.01-0.02 s (bench: resume points).
FIRST_RETRY = timedelta(seconds=0.02)
# Restore is the one thing that must eventually happen: retry it for as long as it takes, backing off to 10 s.
RESTORE_RETRY = RetryPolicy(initial_interval=FIRST_RETRY, backoff_coefficient=2,
                            maximum_interval=timedelta(seconds=10), maximum_attempts=0)
STAGE_RETRY = RetryPolicy(initial_interval=FIRST_RETRY, maximum_interval=timedelta(seconds=5),
                          maximum_attempts=9)  # 8 retries over ~5 s (0.02 s doubling), as 7 from 0.1 s took ~6 s


# How long a restore waits for its host's worker to take it before the run says it is waiting for that host (and
# schedules it again). A worker that polls takes a task within milliseconds; a dead host's queue has no poller.
HOST_WAIT = timedelta(seconds=3)


def on_host(subject: SubjectRef) -> workflow.ActivityConfig:
    """Where an activity that touches `subject` runs: on its host's task queue, which only that host's workers
    poll. A run that names no host (every run started before hosts existed) leaves it unset: the run's own queue,
    as it always was, so its history replays unchanged."""
    if subject.host is None:
        return workflow.ActivityConfig()
    return workflow.ActivityConfig(task_queue=host_queue(workflow.info().task_queue, subject.host))


def _config(start_to_close_s: float, retry: RetryPolicy, **more) -> workflow.ActivityConfig:
    return workflow.ActivityConfig(start_to_close_timeout=timedelta(seconds=start_to_close_s),
                                   heartbeat_timeout=HEARTBEAT, retry_policy=retry, **more)


def preflight(inp: ChaosInput) -> workflow.ActivityConfig:
    # Room for an image build and `compose up` on top of the health wait; heartbeats every second meanwhile.
    return _config(inp.preflight_timeout_s + 180, RetryPolicy(maximum_attempts=3))


def load_window(inp: ChaosInput, retried: bool) -> workflow.ActivityConfig:
    """`retried` (patch load-window-retry): a window lost with its worker gets one more attempt from the server at
    once, so the load's gap is only the heartbeat timeout. Without it the workflow had to notice first, and its task
    waited out the dead worker's sticky queue (runtime/worker.py STICKY_TIMEOUT). A window that fails by itself is
    never retried (the activity makes its own failures non-retryable): the workflow starts the next one a second
    later."""
    once_more = RetryPolicy(initial_interval=FIRST_RETRY, maximum_attempts=2)
    return _config(inp.load_window_s + 10, once_more if retried else RetryPolicy(maximum_attempts=1))


def guardrails(inp: ChaosInput) -> workflow.ActivityConfig:
    # Retried for as long as the run lasts: a guardrail that died with its worker must come back.
    return _config(inp.countdown_s + inp.max_fault_s + 600, RESTORE_RETRY)


def their_detector(inp: ChaosInput) -> workflow.ActivityConfig:
    return _config(inp.detect_timeout_s + 30, STAGE_RETRY)


def inject(inp: ChaosInput) -> workflow.ActivityConfig:
    # Some kinds take a while (a stop waits out its grace period). If the run is cut short mid-inject, the
    # cancellation waits for the inject to finish, so the restore never races it.
    return _config(inp.max_fault_s + 30, STAGE_RETRY,
                   cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)


def detect(inp: ChaosInput) -> workflow.ActivityConfig:
    return _config(inp.detect_timeout_s + 30, STAGE_RETRY)


def choose() -> workflow.ActivityConfig:
    return _config(30, STAGE_RETRY)


def confirm() -> workflow.ActivityConfig:
    return _config(30, STAGE_RETRY)


def evidence() -> workflow.ActivityConfig:
    return _config(30, STAGE_RETRY, schedule_to_close_timeout=timedelta(seconds=60))


def diagnose(inp: ChaosInput) -> workflow.ActivityConfig:
    # The activity falls back to the rules engine by itself within deadline_s, so it fails only if the worker dies;
    # schedule_to_close bounds the stage, retry included, however that goes.
    return _config(inp.diagnosis_deadline_s + 10, RetryPolicy(maximum_attempts=2),
                   schedule_to_close_timeout=timedelta(seconds=inp.diagnosis_deadline_s + 20))


def undo() -> workflow.ActivityConfig:
    return _config(60, RESTORE_RETRY)


def verify(timeout_s: float) -> workflow.ActivityConfig:
    # A second attempt is for a worker that died; a subject still unhealthy after the whole timeout is not retried
    # (the run undoes the fault once more instead, in case a late inject put it back).
    return _config(timeout_s + 30, RetryPolicy(maximum_attempts=2,
                                               non_retryable_error_types=[ErrorType.SUBJECT_UNHEALTHY]))


def safety_check() -> workflow.ActivityConfig:
    return _config(300, RetryPolicy(maximum_attempts=2))


# A guard watches for as long as its run lasts; an interactive run can be held at a gate for hours.
GUARD_WATCH_TIMEOUT = timedelta(days=7)


# The watch is one long poll for its run's close (activities/reaper.py), so its heartbeats are all it costs, and
# the server pays for them: at 20 runs on one worker, heartbeats were 74 % of the server's requests (bench, sweep).
# A guard acts only once its run has closed, so a watch lost with its worker may take this long to come back.
GUARD_HEARTBEAT = timedelta(seconds=10)


def guard_watch() -> workflow.ActivityConfig:
    return workflow.ActivityConfig(start_to_close_timeout=GUARD_WATCH_TIMEOUT, heartbeat_timeout=GUARD_HEARTBEAT)


def find_orphans() -> workflow.ActivityConfig:
    return workflow.ActivityConfig(start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=HEARTBEAT)


def reaper_verify() -> workflow.ActivityConfig:
    # The sweep reports what it found: one attempt, and a subject still unhealthy is a finding, not a retry.
    return _config(90, RetryPolicy(maximum_attempts=1))


def previous_campaign() -> workflow.ActivityConfig:
    # One visibility query and one result read: seconds. A server that cannot answer costs the scorecard, never the
    # campaign's cells (the workflow reports "no comparison" instead).
    return _config(30, STAGE_RETRY)
