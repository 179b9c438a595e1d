"""Activity failures the server keeps whole (runtime/failures.py): an activity that raises a Docker error through
python-on-whales must fail with a message that says why in one line, within the size the server keeps."""

from __future__ import annotations

import pytest
from python_on_whales import DockerException
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from durable_chaos.runtime.failures import to_send

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


def as_the_worker_sends_it() -> None:
    """What the worker's interceptor does with an activity's exception."""
    try:
        start_member()
    except Exception as exc:
        sent = to_send(exc)
        if sent is exc:
            raise
        raise sent from None


def test_a_docker_error_fails_the_activity_in_one_line_with_the_daemons_reason():
    with pytest.raises(ApplicationError) as raised:
        as_the_worker_sends_it()
    err = raised.value
    assert err.type == "DockerException"  # retry policies match the type name, as before
    assert str(err).endswith("bind: address already in use") and "\n" not in str(err)
    assert "container start" in str(err)
    failure = failure_of(err)
    assert failure.ByteSize() < KEPT_BYTES and not failure.HasField("cause"), failure.ByteSize()


def test_an_application_error_goes_through_as_it_was_raised():
    refusal = ApplicationError("unknown target: etcd9", type="BadInput", non_retryable=True)
    assert to_send(refusal) is refusal
