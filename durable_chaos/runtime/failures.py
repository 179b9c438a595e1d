"""Activity failures the server keeps whole: what failed, in one line, without the stack traces.

The server keeps a pending activity's last failure (what `status`, the live view and the web UI show while a stage
is being retried) only up to a size: a restore that failed because Docker could not start the member sent 4,253
bytes (python-on-whales' message with the command, the return code and stderr, its stack trace, and its cause's),
and the server replaced it with "Failure exceeds size limit." (tests/integration/test_durability.py). So the worker
sends an unexpected exception as an `ApplicationError` of the same type name, which the retry policies match as
before, with the exception's own words in one line; the whole traceback goes to the worker's log, once (the SDK's
own warning for the attempt, which would show only the short error and this module's frames, is left out). Errors
the activities raise on purpose (`ApplicationError`: bad input, Docker unreachable, a handed-back watch) go as raised.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from python_on_whales import DockerException
from temporalio import activity
from temporalio.exceptions import ApplicationError, TemporalError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from durable_chaos.wording import one_line

# Far inside what the server keeps, and room for a compose command line and Docker's answer.
MESSAGE_CHARS = 1000


# Docker's 64-digit ids, shortened as `docker ps` shows them: in one line of the live view, the cause fits.
DOCKER_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")


def _words(exc: Exception) -> str:
    if isinstance(exc, DockerException):
        # python-on-whales' message is four lines of which one says why: the command, and what Docker answered.
        said = (exc.stderr or "").strip() or f"exit code {exc.return_code}"
        return DOCKER_ID.sub(r"\1", f"{' '.join(exc.docker_command)}: {said}")
    return str(exc) or type(exc).__name__


class Compacted(ApplicationError):
    """An unexpected exception as it is sent: an ApplicationError like any other to the server and the workflow."""


def to_send(exc: Exception) -> Exception:
    """What the worker sends the server for an activity that raised `exc`."""
    if isinstance(exc, TemporalError):
        return exc
    return Compacted(one_line(_words(exc), MESSAGE_CHARS), type=type(exc).__name__)


class _SaidOnce(logging.Filter):
    """Leaves out the SDK's "Completing activity as failed" for an error sent compacted: the interceptor has
    logged the original, with its whole traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Compacted))


ACTIVITY_LOGGER = logging.getLogger("temporalio.activity")  # the SDK's, and activity.logger's


class _Compacting(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as exc:
            sent = to_send(exc)
            if sent is exc:
                raise
            activity.logger.warning("%s failed: %s", activity.info().activity_type, sent, exc_info=True)
            raise sent from None  # `from None`: the SDK would send the original again as the failure's cause


class CompactFailures(Interceptor):
    def __init__(self) -> None:
        if not any(isinstance(f, _SaidOnce) for f in ACTIVITY_LOGGER.filters):
            ACTIVITY_LOGGER.addFilter(_SaidOnce())

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Compacting(next)
