"""Docker hosts without a server or Docker: what a host name may be, a run's id on its host, what a host's worker
lets in, and a campaign's hosts (an axis, or a host per subject copy). The routing itself is tested against a dev
server (tests/workflow/test_hosts.py) and two real engines (tests/integration/test_hosts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_chaos import admission
from durable_chaos.campaign.load import load_campaign, plan_lines
from durable_chaos.contracts import Admission, ChaosInput, ErrorType, SubjectRef
from durable_chaos.contracts.names import Attr
from durable_chaos.experiment.load import BadExperiment, load_experiment
from durable_chaos.hosts import check_host_name, default_host
from durable_chaos.ids import host_queue, run_workflow_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["a", "staging-b", "host_1.example", "A9"])
def test_host_names_that_can_be_a_task_queue_and_an_id_suffix(name):
    assert check_host_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a b", "a/b", "x" * 64, "ü"])
def test_a_malformed_host_name_is_refused_in_one_line(name):
    with pytest.raises(ValueError, match="is not valid") as err:
        check_host_name(name)
    assert "\n" not in str(err.value)


def test_the_default_host_is_this_machine_unless_chaos_host_names_one(monkeypatch):
    monkeypatch.delenv("CHAOS_HOST", raising=False)
    assert check_host_name(default_host())
    monkeypatch.setenv("CHAOS_HOST", "rack-7")
    assert default_host() == "rack-7"


def test_a_run_on_a_host_is_its_copy_there_and_is_found_by_its_host():
    assert run_workflow_id("chaos-etcd", "b") == "chaos-etcd@b" != run_workflow_id("chaos-etcd", "a")
    assert run_workflow_id("chaos-etcd", None) == "chaos-etcd"  # runs from before hosts
    assert host_queue("chaos-demo", "b") == "chaos-demo@b"
    attrs = ChaosInput(subject=SubjectRef(name="etcd", host="b")).start_attributes()
    assert attrs.get(Attr.HOST) == "b"
    assert ChaosInput(subject=SubjectRef(name="etcd")).start_attributes().get(Attr.HOST) is None


def test_a_hosts_worker_serves_only_its_subjects_and_search_path_folders():
    served = Admission(subjects=["etcd"], folders=["/srv/subjects/kv"])
    admission.check(SubjectRef(name="etcd"), served)
    admission.check(SubjectRef(name="kv", folder="/srv/subjects/kv"), served)
    with pytest.raises(admission.NotAllowed) as err:
        admission.check(SubjectRef(name="nats"), served, host="b")
    assert err.value.kind == ErrorType.SUBJECT_NOT_ALLOWED and "not allowed on host b's worker" in str(err.value)
    with pytest.raises(admission.NotAllowed) as err:
        admission.check(SubjectRef(name="kv", folder="/home/me/kv"), served, host="b")
    assert err.value.kind == ErrorType.FOLDER_NOT_ON_HOST and "/home/me/kv" in str(err.value)
    admission.check(SubjectRef(name="anything", folder="/anywhere"), Admission(unrestricted=True))


def test_a_host_worker_serves_the_shipped_subjects_by_default_and_refuses_unknown_names():
    names = admission.for_host().subjects
    assert {"etcd", "nats", "postgres"} <= set(names)
    assert admission.for_host(["etcd"]).subjects == ["etcd"]
    with pytest.raises(ValueError, match="unknown subject 'etdc'"):
        admission.for_host(["etdc"])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def test_a_hosts_axis_runs_every_cell_on_each_host(tmp_path):
    loaded = load_campaign(write(tmp_path, """campaign: fleet
parallelism: 2
matrix:
  subjects: [etcd]
  faults: [kill, pause]
  hosts: [a, b]
"""))
    cells = loaded.input.cells
    assert [(c.host, c.fault) for c in cells] == [("a", "kill"), ("a", "pause"), ("b", "kill"), ("b", "pause")]
    assert all(c.run_input.subject.host == c.host for c in cells)
    assert cells[0].key == "etcd · kill · random · on a"
    # One copy name on two hosts is two subjects: two locks, so both may run at once.
    assert cells[0].run_id == "chaos-etcd@a" and cells[2].run_id == "chaos-etcd@b"
    assert "host b" in "\n".join(plan_lines(loaded))


def test_a_subject_copy_names_its_own_host_and_the_experiment_a_default(tmp_path):
    loaded = load_campaign(write(tmp_path, """campaign: fleet
experiment: {host: c}
matrix:
  subjects: [{subject: etcd, project: e1, host: a}, {subject: etcd, project: e2}]
"""))
    assert [c.host for c in loaded.input.cells] == ["a", "c"]


def test_a_malformed_host_in_a_file_is_refused_naming_the_line(tmp_path):
    with pytest.raises(BadExperiment, match="hosts"):
        load_campaign(write(tmp_path, "campaign: x\nmatrix:\n  subjects: [etcd]\n  hosts: ['a b']\n"))
    experiment = tmp_path / "e.yaml"
    experiment.write_text("host: 'no such/host'\n")
    with pytest.raises(BadExperiment, match="e.yaml:1"):
        load_experiment(experiment)
    experiment.write_text("host: b\n")
    assert load_experiment(experiment).run_input.subject.host == "b"


class _BusyServer:
    """A frontend that answers its first `failures` describe calls as a busy dev server did in CI45: 'operation was
    canceled' (a status the SDK does not retry by itself), then answers with one live poller."""

    namespace = "default"

    def __init__(self, failures: int, status):
        self.failures, self.status, self.calls = failures, status, 0
        self.workflow_service = self

    async def describe_task_queue(self, req, **_):
        from google.protobuf.timestamp_pb2 import Timestamp
        from temporalio.api.taskqueue.v1 import PollerInfo
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse
        from temporalio.service import RPCError

        self.calls += 1
        if self.calls <= self.failures:
            raise RPCError("operation was canceled", self.status, b"")
        seen = Timestamp()
        seen.GetCurrentTime()
        return DescribeTaskQueueResponse(pollers=[PollerInfo(identity="42@box", last_access_time=seen)])


async def test_a_worker_check_rides_out_a_busy_servers_cancelled_answer():
    from temporalio.service import RPCError, RPCStatusCode

    from durable_chaos.runtime.fleet import pollers

    server = _BusyServer(2, RPCStatusCode.CANCELLED)
    assert [p.identity for p in await pollers(server, "q@b")] == ["42@box"] and server.calls == 3
    refused = _BusyServer(1, RPCStatusCode.PERMISSION_DENIED)  # not a passing state: said at once
    with pytest.raises(RPCError):
        await pollers(refused, "q@b")
    assert refused.calls == 1
