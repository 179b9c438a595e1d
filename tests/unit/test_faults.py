"""The fault pair's edges, through the real activities and the real docker CLI (no cluster needed)."""

from __future__ import annotations

import pytest
from python_on_whales.client_config import ClientConfig
from python_on_whales.exceptions import NoSuchContainer
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.docker import off_loop
from activities.faults import inject_fault, restore_fault
from durable_chaos.contracts import ErrorType, FaultRequest, SubjectRef
from durable_chaos.docker_engine import EngineContainer

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


async def test_a_fault_kind_acting_while_docker_is_down_is_told_docker_is_not_reachable(monkeypatch):
    # Fault kinds act through the Engine API (EngineContainer): an engine that does not answer must still read as
    # "Docker is not reachable" to the activities, which retry a restore until it is back.
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    member = EngineContainer(ClientConfig(), "0" * 64, is_immutable_id=True)
    with pytest.raises(ApplicationError) as err:
        await off_loop(member.kill)
    assert err.value.type == ErrorType.DOCKER_UNAVAILABLE, err.value
    assert "/nonexistent/docker.sock" in err.value.message


def test_a_container_gone_meanwhile_reads_as_no_such_container():
    # Fault kinds catch python-on-whales' own error for a container that is gone (a copy torn down mid-run).
    with pytest.raises(NoSuchContainer):
        EngineContainer(ClientConfig(), "0" * 64, is_immutable_id=True).reload()
