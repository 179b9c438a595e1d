"""Activity failures the server keeps whole (runtime/failures.py): an activity that raises a Docker error through
python-on-whales must fail with a message that says why in one line, within the size the server keeps, and the
worker's log must get the original once, whole."""

from __future__ import annotations

import logging

import pytest
from python_on_whales import DockerException
from temporalio import activity
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import ActivityInboundInterceptor

from durable_chaos.runtime.failures import CompactFailures

DAEMON = ("Error response from daemon: driver failed programming external connectivity on endpoint t-1a2b-etcd2-1 ("
          + "5" * 64 + "): Error starting userland proxy: listen tcp4 127.0.0.1:24002: bind: address already in use")
# The server replaced a pending activity's last failure of 4,253 bytes (such a Docker error, its stack and its
# cause's) with "Failure exceeds size limit."; one of 2,000 bytes is far inside what it keeps.
KEPT_BYTES = 2000


def failure_of(exc: BaseException) -> Failure:
    out = Failure()
    DataConverter.default.failure_converter.to_failure(exc, DataConverter.default.payload_converter, out)
    return out


def start_member(level: int = 12) -> None:
    """A failure from deep in a call stack, with a cause, as a fault kind's start raises it."""
    if level:
        return start_member(level - 1)
    try:
        raise OSError("engine said no")
    except OSError as exc:
        raise DockerException(["engine-api", "container", "start", "f" * 64], 500, stderr=DAEMON.encode()) from exc


class Activity(ActivityInboundInterceptor):
    """The activity itself, innermost: raises what `raises` raises."""

    def __init__(self, raises) -> None:
        self.raises = raises

    async def execute_activity(self, input):
        self.raises()


async def run_through_the_worker(raises) -> None:
    """The activity as the worker runs it: inside the product's interceptor; then the SDK's own warning for a
    failed attempt, as the SDK logs it."""
    try:
        await CompactFailures().intercept_activity(Activity(raises)).execute_activity(None)
    except Exception:
        activity.logger.warning("Completing activity as failed", exc_info=True)
        raise


async def test_a_docker_error_fails_the_activity_in_one_line_with_the_daemons_reason():
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(run_through_the_worker, start_member)
    err = raised.value
    assert err.type == "DockerException"  # retry policies match the type name, as before
    assert str(err).endswith("bind: address already in use") and "\n" not in str(err)
    assert "container start ffffffffffff: Error response from daemon" in str(err)  # ids as `docker ps` shows them
    assert "endpoint t-1a2b-etcd2-1 (555555555555): Error starting" in str(err)
    failure = failure_of(err)
    assert failure.ByteSize() < KEPT_BYTES and not failure.HasField("cause"), failure.ByteSize()


async def test_an_application_error_goes_through_as_it_was_raised():
    refusal = ApplicationError("unknown target: etcd9", type="BadInput", non_retryable=True)

    def refuse() -> None:
        raise refusal

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(run_through_the_worker, refuse)
    assert raised.value is refusal


async def test_a_compacted_failure_is_logged_once_with_the_original_traceback(caplog):
    """The worker's log gets the original exception's whole traceback, and not the SDK's second warning for the
    same attempt (which would carry only the short error)."""
    caplog.set_level(logging.WARNING, logger="temporalio.activity")
    with pytest.raises(ApplicationError):
        await ActivityEnvironment().run(run_through_the_worker, start_member)
    said = [r for r in caplog.records if r.name == "temporalio.activity"]
    assert len(said) == 1 and "address already in use" in said[0].getMessage(), [r.getMessage() for r in said]
    assert "start_member" in caplog.text and "engine said no" in caplog.text  # the original's frames and cause
