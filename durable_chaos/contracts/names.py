"""Names and constants every part agrees on: task queue, workflow names, stages, fault states, search attributes, error types."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Literal

from temporalio.common import (
    SearchAttributeKey,
)
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

TASK_QUEUE = "chaos-runs"


WORKFLOW_NAME = "ChaosDemoWorkflow"


SCHEDULED_WORKFLOW_NAME = "ScheduledChaosWorkflow"


GUARD_WORKFLOW_NAME = "FaultGuardWorkflow"


NOTIFY_WORKFLOW_NAME = "NotifyWorkflow"


# The live view draws this many of the latest load windows; the full list is in the report.
RECENT_WINDOWS = 30


# Workflow tasks here are tiny; if a worker dies holding one, the server hands it to another worker after this
# long (Temporal's default is 10 s, which would dominate resume time after a crash). A new worker replays the whole
# history inside one task; the busy-host benchmark reports the longest task (0.12 s beside stress-ng).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=1)


class Stage(str, Enum):
    PREFLIGHT = "preflight"
    COUNTDOWN = "countdown"
    INJECT = "inject"
    DETECT = "detect"
    DIAGNOSE = "diagnose"
    HOLD = "hold"  # a fault held for its step's duration
    WAIT = "wait"  # a step that injects nothing: a wait, an approval, a check, a load change
    RESTORE = "restore"
    VERIFY = "verify"
    SAFETY = "safety"  # final read and the data safety check
    DONE = "done"
    FAILED = "failed"


class FaultState(str, Enum):
    NONE = "none"
    INJECTED = "injected"
    RESTORED = "restored"


# 100 ops/s resolves an outage to about 10 ms and hardly loads the subject, a minute of it (6000 ops) is checked in
# under 0.1 s (bench/safety.py) and its history takes about 120 KiB.
DEFAULT_LOAD_RATE = 100.0


# A sanity bound, above what one etcd member answered here (wrk, 16 connections: 4,016 ops/s; bench, session 15): a
# chaos run's client shows what a fault does to traffic up to what the system can take, and an open loop holds its
# rate that far if the run lets enough operations be in flight (`load_concurrency`). Beyond that is a load tool's job.
MAX_LOAD_RATE = 10000.0


# The name of a fault kind (a key of `faults.CATALOG`, which holds them all). A plain string here: the catalog, not
# this module, knows the kinds and validates them (a run with an unknown kind is refused in preflight, before
# anything is touched).
FaultKind = str


# inconclusive: a fault never took effect, so the run says nothing about it (never a pass).
Verdict = Literal["pass", "fail", "inconclusive"]


# Search attributes make runs findable in the Temporal UI ("every failed run on etcd"). The worker registers them
# on whatever server it connects to; the embedded dev server is started with them.
class Attr:
    SUBJECT = SearchAttributeKey.for_keyword("ChaosSubject")
    FAULT = SearchAttributeKey.for_keyword("ChaosFault")
    TARGET = SearchAttributeKey.for_keyword("ChaosTarget")
    STAGE = SearchAttributeKey.for_keyword("ChaosStage")
    FAULT_STATE = SearchAttributeKey.for_keyword("ChaosFaultState")
    VERDICT = SearchAttributeKey.for_keyword("ChaosVerdict")
    DETECT_SECONDS = SearchAttributeKey.for_float("ChaosDetectSeconds")
    RESTORE_SECONDS = SearchAttributeKey.for_float("ChaosRestoreSeconds")
    DIAGNOSIS_CORRECT = SearchAttributeKey.for_bool("ChaosDiagnosisCorrect")

    # A campaign's name: its runs, started by hand or by a schedule (whose ids carry the firing time), are found
    # by it for the scorecard.
    CAMPAIGN = SearchAttributeKey.for_keyword("ChaosCampaign")
    # The Docker host a run's subject lives on (set at start): the fleet view lists each host's runs by it.
    HOST = SearchAttributeKey.for_keyword("ChaosHost")
    ALL = (SUBJECT, FAULT, TARGET, STAGE, FAULT_STATE, VERDICT, DETECT_SECONDS, RESTORE_SECONDS, DIAGNOSIS_CORRECT,
           CAMPAIGN, HOST)


def bad_input(message: str) -> ApplicationError:
    """The user's mistake, refused before anything is touched: never retried, and BENIGN, so a worker logs it
    without a traceback (the starter prints it as the one line it is, and may be running the worker itself)."""
    return ApplicationError(message, type=ErrorType.BAD_INPUT, non_retryable=True,
                            category=ApplicationErrorCategory.BENIGN)


class ErrorType:
    """`ApplicationError.type` values the CLI maps to exit codes. All are non-retryable: retrying cannot fix them."""

    BAD_INPUT = "BadInput"  # unknown subject/target/fault, broken compose file -> exit 2
    DOCKER_UNAVAILABLE = "DockerUnavailable"  # -> exit 3
    SUBJECT_UNHEALTHY = "SubjectUnhealthy"  # steady state never reached before the fault -> exit 3
    CONTAINER_GONE = "ContainerGone"  # the target's container no longer exists (subject torn down meanwhile)
    SUBJECT_NOT_ALLOWED = "SubjectNotAllowed"  # the host's worker does not serve this subject -> exit 9
    FOLDER_NOT_ON_HOST = "FolderNotOnHost"  # the host's worker has no such subject folder -> exit 8
    VERDICT_FAIL = "ChaosVerdictFail"  # a scheduled firing whose run failed its verdict (pause-on-failure)
