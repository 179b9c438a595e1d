"""The fault pair's edges, through the real activities and the real docker CLI (no cluster needed)."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.faults import inject_fault, restore_fault
from durable_chaos.contracts import ErrorType, FaultRequest, SubjectRef

NOWHERE = "unix:///nonexistent/docker.sock"


def request(project: str = "t-nothing-here") -> FaultRequest:
    return FaultRequest(subject=SubjectRef(name="etcd", project=project, port_base=24000), fault="kill",
                        target="etcd1")


async def test_restore_keeps_retrying_while_docker_is_down(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(restore_fault, request())
    assert err.value.type == ErrorType.DOCKER_UNAVAILABLE
    assert not err.value.non_retryable  # the workflow retries the restore until Docker is back


async def test_inject_gives_up_at_once_when_docker_is_down(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(inject_fault, request())
    assert err.value.type == ErrorType.DOCKER_UNAVAILABLE and err.value.non_retryable


async def test_restoring_a_torn_down_subject_reports_it_gone():
    result = await ActivityEnvironment().run(restore_fault, request("t-never-started"))
    assert result.container_gone and not result.already_up
