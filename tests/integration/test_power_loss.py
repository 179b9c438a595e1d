"""power-loss on real etcd (which fsyncs every commit: the control that must lose nothing), through the run a user
starts: preflight puts every member's data on a power-loss layer, the fault SIGKILLs the member and drops what it
had not fsynced, the undo starts it again, and the data safety checker reads the run's history. Plus the refusals
that must touch nothing, and the copy's teardown leaving no helper or mount behind.

"Nothing left" is read from the machine: /proc/self/mountinfo and the engine's containers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from python_on_whales import docker

from durable_chaos.faults.powerfs import Layer, on_layers
from durable_chaos.state import state_dir
from durable_chaos.contracts import GuardReport
from durable_chaos.ids import fault_guard_id
from tests.conftest import private_copy, run_to_report, starter, subject_args
from tests.integration.test_durability import held_at
from tests.workers import WorkerProcess
from tests.integration import test_disk_faults as disk_faults

PORT_RANGE = (44000, 44990)
cli_env = disk_faults.cli_env  # the CLI's environment with a task queue of its own (a fixture)


def layer_mounts(project: str) -> list[str]:
    folder = str(state_dir() / "powerfs" / project)
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if folder in line]


def helpers(project: str) -> list[str]:
    return [c.name for c in docker.container.list(all=True) if c.name.startswith(f"chaos-powerfs-{project}-")]


async def test_a_power_loss_of_an_etcd_member_under_load_loses_no_acknowledged_write(client, task_queue,
                                                                                     own_state_dir):
    async with private_copy("etcd", PORT_RANGE) as copy:
        project = copy.instance.project
        report = await run_to_report(client, task_queue, copy, "power-loss", fault="power-loss", target="follower")
        assert report.verdict == "pass", report.reasons
        assert report.safety is not None and report.safety.verdict == "ok", report.safety
        assert report.safety.acked_writes > 0
        # What the power loss dropped, as the fault recorded it beside the member's layer (etcd fsyncs before it
        # answers: whatever was dropped had not been acknowledged).
        [record] = (state_dir() / "powerfs" / project / report.target).glob("lost-*.json")
        lost = json.loads(record.read_text())
        print(f"power loss of {report.target}: {lost}; acknowledged writes {report.safety.acked_writes}, "
              f"lost {report.safety.lost_writes}")
        assert set(lost) == {"files", "bytes", "pages"} and lost["bytes"] >= 0
        # The report says what the power loss did, as the fault's evidence of effect.
        assert report.effect is not None and report.effect.took_effect, report.effect
        [said] = report.effect.evidence
        assert said.startswith(f"{report.target}: power lost;"), said
        # The members ran on their layers (the run put them there): one FUSE mount and one helper each.
        assert on_layers(project)
        for service in copy.instance.subject.services:
            assert Layer(project, service).mounted(), service
        assert sorted(helpers(project)) == sorted(f"chaos-powerfs-{project}-{s}" for s in copy.instance.subject.services)
    # The copy torn down (by its project name, as every test copy): its layers went with it.
    assert not layer_mounts(project)
    assert not helpers(project)
    assert not (state_dir() / "powerfs" / project).exists()


@pytest.mark.parametrize("args, says", [
    (["--count", "2"], "hitting 2 of 3 members of etcd loses its quorum"),
])
async def test_a_power_loss_the_quorum_rule_forbids_is_refused_with_nothing_touched(etcd, cli_env, args, says):
    before = helpers(etcd.instance.project)
    proc = await asyncio.to_thread(starter, "chaos", *subject_args(etcd), "--fault", "power-loss", *args,
                                   "--countdown", "0", env=cli_env, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert helpers(etcd.instance.project) == before == []
    assert not on_layers(etcd.instance.project)


async def test_a_power_loss_on_a_subject_that_declares_no_data_volume_is_refused(cli_env, tmp_path):
    folder = tmp_path / "nodata"
    folder.mkdir()
    (folder / "subject.yaml").write_text(
        "name: nodata\nservices: [one]\nports: {base: 44900, names: [client]}\n"
        "images:\n  - ref: my-redis:7\n    env: REDIS_IMAGE\n"
        "    build: {kind: debian, packages: [redis-server, redis-sentinel]}\n"
        "probes:\n  - {name: ping, kind: tcp, send: \"PING\\r\\n\", expect: {output: \"\\\\+PONG\"}}\n"
        "load:\n  - {name: ping, kind: tcp, send: \"PING\\r\\n\", expect: {output: \"\\\\+PONG\"}}\n")
    (folder / "docker-compose.yaml").write_text(
        "services:\n  one:\n    image: ${REDIS_IMAGE}\n    ports: [\"127.0.0.1:${ONE_PORT}:6379\"]\n")
    proc = await asyncio.to_thread(starter, "chaos", "--subject", str(folder), "--project", "t-nodata", "--fault",
                                   "power-loss", "--countdown", "0", env=cli_env, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == ("error: power-loss: subject 'nodata' declares no data volume (where its members "
                                   "keep their data): nothing was touched"), proc.stderr
    out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=t-nodata"],
                         capture_output=True, text=True).stdout
    assert out.strip() == ""


async def nats_power_loss_of_every_member(client, task_queue):
    """One run on a fresh NATS copy: every member loses power at once (the whole rack), under the queue load."""
    async with private_copy("nats", PORT_RANGE) as copy:
        report = await run_to_report(client, task_queue, copy, "nats-power-loss", fault="power-loss", count=3,
                                     allow_quorum_loss=True)
        monitor = copy.instance.subject.monitor_urls(copy.instance.port_base)["nats1"]
        with urllib.request.urlopen(f"{monitor}/varz", timeout=5) as answer:
            varz = json.loads(answer.read())
        lost = [json.loads(p.read_text()) for p in (state_dir() / "powerfs" / copy.instance.project).glob("*/lost-*")]
        return report, varz["jetstream"]["config"], lost


async def test_a_power_loss_of_every_nats_member_loses_acknowledged_messages_with_the_default_sync_interval(
        client, task_queue, own_state_dir, monkeypatch):
    monkeypatch.delenv("NATS_SYNC_INTERVAL", raising=False)
    report, config, lost = await nats_power_loss_of_every_member(client, task_queue)
    print(f"NATS, default sync interval: {lost}; {report.safety.reasons}")
    assert not config.get("sync_always")  # JetStream's default: fsync every 2 minutes
    assert sum(drop["bytes"] for drop in lost) > 0  # what it had acknowledged was only in the page cache
    assert report.verdict == "fail"
    assert report.safety.verdict == "violated", report.safety
    found = report.safety.counterexample
    assert found is not None and found.checker == "lost messages", found
    assert report.safety.lost_writes > 0
    assert any("acknowledged messages lost" in reason for reason in report.safety.reasons), report.safety.reasons


async def test_with_sync_interval_always_the_report_says_what_the_same_power_loss_lost(
        client, task_queue, own_state_dir, monkeypatch):
    # `always` makes JetStream fsync each message before it acknowledges it, and the layer drops far less (13-17 KB a
    # member, against 52-76 KB by default). It does not make the whole rack's power loss safe: in 5 of 38 runs here
    # (sessions 19 and 20, with both the old undo and the new) the last acknowledged message was lost all the same,
    # so a test cannot expect either outcome. What the product owes is a report that says what the checker found:
    # a pass with every acknowledged message there, or a fail that names the lost one.
    monkeypatch.setenv("NATS_SYNC_INTERVAL", "always")  # the subject's documented setting (its compose file)
    report, config, lost = await nats_power_loss_of_every_member(client, task_queue)
    print(f"NATS, sync_interval always: {lost}; {report.safety.reasons}")
    assert config.get("sync_always") is True
    assert report.safety.acked_writes > 0
    if report.safety.verdict == "ok":
        assert report.safety.lost_writes == 0 and report.verdict == "pass", report.reasons
    else:
        assert report.safety.verdict == "violated", report.safety
        found = report.safety.counterexample
        assert found is not None and found.checker == "lost messages", found
        assert report.safety.lost_writes > 0 and report.verdict == "fail", report.reasons
        assert any("acknowledged message" in r and " lost " in r for r in report.safety.reasons), \
            report.safety.reasons


async def test_a_power_loss_run_terminated_while_the_member_is_down_is_restored_by_its_guard(
        client, task_queue, own_state_dir, tmp_path):
    # The worker is a process of its own, with the state directory this test reads (the layers' folders).
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        async with private_copy("etcd", PORT_RANGE) as copy:
            project = copy.instance.project
            handle = await held_at(client, task_queue, copy, "etcd1", fault="power-loss")
            # Held before detection: the power loss is in, the member down, what its layer dropped on record.
            assert not (await copy.running())["etcd1"]
            assert list((state_dir() / "powerfs" / project / "etcd1").glob("lost-*.json"))
            await handle.terminate(reason="simulating an operator's terminate")
            guard = client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id),
                                               result_type=GuardReport)
            report = await asyncio.wait_for(guard.result(), 60)
            assert report.action.action == "restored" and report.action.target == "etcd1", report
            assert report.action.healthy_after is True
            assert (await copy.running())["etcd1"] and (await copy.wait_healthy()).ok
            assert Layer(project, "etcd1").mounted()  # the copy is still on its layers, as the run left it
    finally:
        worker.stop()
    assert not layer_mounts(project) and not helpers(project)
