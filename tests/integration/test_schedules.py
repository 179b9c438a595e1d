"""Nightly runs: `starter.py schedule ...` against a real dev server, a real worker and a real etcd copy.

A schedule's run takes the same per-subject lock as a manual run: fired while the subject is busy, it is skipped and
kills nothing (checked in Docker's event log).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest

from durable_chaos.contracts import (
    SCHEDULED_WORKFLOW_NAME,
    ChaosInput,
    ScheduledRunResult,
    final_report,
)
from durable_chaos.contracts.campaign import CampaignInput
from durable_chaos.faults import CATALOG
from durable_chaos.hosts import default_host
from durable_chaos.ids import run_workflow_id
from tests.conftest import command_env, running_worker, starter, subject_args
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (26500, 26990)


@pytest.fixture
def cli_env(client, task_queue, tmp_path) -> dict[str, str]:
    return command_env(client.service_client.config.target_host, tmp_path, CHAOS_TASK_QUEUE=task_queue,
                       COLUMNS="200")


@pytest.fixture
def schedule_id(cli_env):
    sid = f"t-nightly-{uuid.uuid4().hex[:8]}"
    yield sid
    starter("schedule", "delete", sid, env=cli_env)  # already gone when the test deleted it: exit 2, harmless


async def _fired(client, schedule_id: str, timeout: float = 60) -> ScheduledRunResult:
    """Wait for the schedule's one firing (found by the built-in TemporalScheduledById attribute) to finish."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async for wf in client.list_workflows(f'TemporalScheduledById="{schedule_id}"'):
            assert wf.workflow_type == SCHEDULED_WORKFLOW_NAME
            handle = client.get_workflow_handle(wf.id, run_id=wf.run_id, result_type=ScheduledRunResult)
            return await asyncio.wait_for(handle.result(), deadline - asyncio.get_running_loop().time())
        assert asyncio.get_running_loop().time() < deadline, f"schedule {schedule_id} never fired"
        await asyncio.sleep(0.5)


async def test_schedule_create_trigger_run_delete(client, task_queue, cli_env, etcd, schedule_id):
    since = datetime.now(timezone.utc)
    created = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, "--timezone",
                                      "Europe/Berlin", "--countdown", "0", *subject_args(etcd), env=cli_env)
    assert created.returncode == 0, created.stderr
    described = await asyncio.to_thread(starter, "schedule", "describe", schedule_id, env=cli_env)
    assert described.returncode == 0, described.stderr
    assert "0 3 * * * (Europe/Berlin)" in described.stdout and "SKIP" in described.stdout
    assert f"on etcd (project {etcd.instance.project})" in described.stdout
    listed = await asyncio.to_thread(starter, "schedule", "list", env=cli_env)
    assert schedule_id in listed.stdout and "active" in listed.stdout

    async with running_worker(client, task_queue):
        triggered = await asyncio.to_thread(starter, "schedule", "trigger", schedule_id, env=cli_env)
        assert triggered.returncode == 0, triggered.stderr
        fired = await _fired(client, schedule_id, timeout=120)
    assert fired.started and fired.verdict == "pass", fired
    # The run took the subject's lock (its fixed workflow id) and is findable like a manual run.
    assert fired.workflow_id == run_workflow_id(etcd.instance.project, default_host())
    report = await final_report(client.get_workflow_handle_for(ChaosDemoWorkflow.run, fired.workflow_id,
                                                               run_id=fired.run_id))
    assert (await etcd.died_since(since)) == [report.target]
    found = [wf.id async for wf in client.list_workflows(
        f'ChaosSubject="etcd" AND ChaosVerdict="pass" AND WorkflowId="{fired.workflow_id}"')]
    assert found, "the scheduled run is not findable by its search attributes"
    assert all((await etcd.running()).values())

    deleted = await asyncio.to_thread(starter, "schedule", "delete", schedule_id, env=cli_env)
    assert deleted.returncode == 0, deleted.stderr
    gone = await asyncio.to_thread(starter, "schedule", "describe", schedule_id, env=cli_env)
    assert gone.returncode == 2 and f"no schedule {schedule_id!r}" in gone.stderr


async def test_schedule_firing_while_a_manual_run_holds_the_subject_is_skipped(client, task_queue, cli_env, etcd,
                                                                               schedule_id):
    since = datetime.now(timezone.utc)
    # A manual run holds the lock: same workflow id as `starter.py chaos` uses, on a queue no worker serves, so it
    # stays open and never touches the subject.
    holder = await client.start_workflow(ChaosDemoWorkflow.run, ChaosInput(subject=etcd.ref),
                                         id=run_workflow_id(etcd.instance.project, default_host()),
                                         task_queue=f"idle-{uuid.uuid4().hex[:8]}")
    try:
        created = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, "--paused",
                                          "--countdown", "0", *subject_args(etcd), env=cli_env)
        assert created.returncode == 0, created.stderr
        for command in ("unpause", "pause"):
            done = await asyncio.to_thread(starter, "schedule", command, schedule_id, env=cli_env)
            assert done.returncode == 0, done.stderr
        async with running_worker(client, task_queue):
            await asyncio.to_thread(starter, "schedule", "trigger", schedule_id, env=cli_env)
            fired = await _fired(client, schedule_id)
        assert not fired.started and "subject busy" in fired.skipped_reason, fired
        assert (await holder.describe()).status.name == "RUNNING"  # the manual run was left alone
        # The skip is visible where users look at schedules, not only inside the firing's result.
        described = await asyncio.to_thread(starter, "schedule", "describe", schedule_id, env=cli_env)
        assert "skipped: subject busy" in described.stdout, described.stdout
        listed = await asyncio.to_thread(starter, "schedule", "list", env=cli_env)
        line = next(x for x in listed.stdout.splitlines() if schedule_id in x)
        assert "skipped: subject busy" in line, listed.stdout
    finally:
        await holder.terminate(reason="test cleanup")
    assert (await etcd.died_since(since)) == []


@pytest.mark.parametrize("args, message", [
    (["--timezone", "Mars/Olympus"], "unknown --timezone 'Mars/Olympus'"),
    (["--cron", "not a cron"], "the server refused the schedule"),
    (["--target", "etcd9"], "'etcd9' is not a target of etcd"),
    (["--fault", "melt"], f"unknown fault 'melt' (known: {', '.join(CATALOG)})"),
    (["--subject", "nope"], "unknown subject 'nope'"),
])
async def test_bad_schedule_input_exits_2_with_one_line(cli_env, schedule_id, args, message):
    proc = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, *args, env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("command", ["describe", "trigger", "pause", "unpause", "delete"])
async def test_unknown_schedule_exits_2(cli_env, command):
    proc = await asyncio.to_thread(starter, "schedule", command, "t-no-such-schedule", env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert "no schedule 't-no-such-schedule'" in proc.stderr


async def test_trigger_without_a_worker_says_nothing_will_run_it(client, cli_env, etcd, schedule_id):
    since = datetime.now(timezone.utc)  # the module's earlier tests killed members: only deaths from now
    created = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, "--paused",
                                      *subject_args(etcd), env=cli_env)
    assert created.returncode == 0, created.stderr
    try:
        triggered = await asyncio.to_thread(starter, "schedule", "trigger", schedule_id, env=cli_env)
    finally:  # the firing waits for a worker that never comes: end it
        for _ in range(20):
            found = [wf async for wf in client.list_workflows(f'TemporalScheduledById="{schedule_id}"')]
            if found:
                break
            await asyncio.sleep(0.5)
        for wf in found:
            await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate(reason="test cleanup")
    assert triggered.returncode == 0, triggered.stderr
    said = triggered.stdout + triggered.stderr
    assert "no worker is polling" in said and "python worker.py" in said, said
    assert (await etcd.died_since(since)) == []


async def test_a_schedule_of_an_experiment_file_keeps_the_file_as_it_was(client, cli_env, schedule_id, tmp_path):
    experiment = tmp_path / "nightly.yaml"
    experiment.write_text("subject: etcd\nvars: {victim: etcd2}\nsteps:\n  - fault: pause\n    target: ${victim}\n")
    created = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, "--file", str(experiment),
                                      "--set", "victim=etcd3", "--project", f"t-{schedule_id}", env=cli_env)
    assert created.returncode == 0, created.stderr
    experiment.write_text("subject: etcd\nsteps:\n  - fault: kill\n    target: etcd1\n")  # edited afterwards
    desc = await client.get_schedule_handle(schedule_id).describe()
    # What the schedule will start: its action's input, decoded as the worker will read it.
    stored, = await client.data_converter.decode(desc.schedule.action.args, [ChaosInput])
    assert (stored.fault, stored.target, stored.subject.project) == ("pause", "etcd3", f"t-{schedule_id}")
    described = await asyncio.to_thread(starter, "schedule", "describe", schedule_id, env=cli_env)
    assert "pause etcd3 on etcd" in described.stdout, described.stdout


async def test_a_schedule_takes_the_file_or_the_run_options_not_both(cli_env, schedule_id, tmp_path):
    experiment = tmp_path / "nightly.yaml"
    experiment.write_text("subject: etcd\n")
    both = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, "--file", str(experiment),
                                   "--fault", "stop", env=cli_env)
    assert both.returncode == 2
    assert both.stderr.strip() == "error: --file says what to run: drop --fault (or set it in the file)"


async def test_a_schedule_of_a_campaign_stores_its_cells_and_describes_them(client, cli_env, schedule_id):
    created = await asyncio.to_thread(starter, "schedule", "create", "--id", schedule_id, "--paused", "--file",
                                      "examples/campaign-nats.yaml", "--set", "max_gap=7", env=cli_env)
    assert created.returncode == 0, created.stderr
    assert "campaign nats-nightly: 4 cells, 1 at once" in created.stdout, created.stdout
    desc = await client.get_schedule_handle(schedule_id).describe()
    assert desc.schedule.action.workflow == "ChaosCampaignWorkflow"
    stored, = await client.data_converter.decode(desc.schedule.action.args, [CampaignInput])
    assert [c.key for c in stored.cells] == ["nats · kill · leader", "nats · kill · follower",
                                             "nats · pause · leader", "nats · pause · follower"]
    assert stored.cells[0].run_input.hypothesis[0].tolerance.lt == 7  # --set went in when it was made
    described = await asyncio.to_thread(starter, "schedule", "describe", schedule_id, env=cli_env)
    assert "campaign nats-nightly: 4 cells" in described.stdout, described.stdout
    listed = await asyncio.to_thread(starter, "schedule", "list", env=cli_env)
    assert schedule_id in listed.stdout, listed.stdout
