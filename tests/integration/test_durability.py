"""The reason the product exists: the killed node comes back whatever happens to the process running the run.

Real Docker + etcd + Temporal dev server; the worker runs as a separate process (`python worker.py`) and is
SIGKILLed at chosen points. What happened to the containers is read from Docker's own event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.reaper import reap_fault
from durable_chaos.contracts import (
    HOST_WORKFLOW_NAME,
    WORKFLOW_TASK_TIMEOUT,
    Attr,
    ChaosInput,
    FaultRequest,
    FaultState,
    GuardReport,
    OrphanedFault,
    Progress,
    ReapRequest,
    final_report,
)
from durable_chaos.ids import fault_guard_id
from durable_chaos.runtime.copies import free_port_base
from durable_chaos.runtime.devserver import dev_server_command
from durable_chaos.runtime.hand_back import HANDED_BACK_MESSAGE
from tests.conftest import (
    ARTIFACTS,
    ROOT,
    command_env,
    starter,
    until,
    walk_to_end,
    walk_to_gate,
)
from tests.workers import WorkerProcess
from workflows.chaos import ChaosDemoWorkflow
from workflows.reaper import REAPER_WORKFLOW

PORT_RANGE = (24000, 24990)
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


def record(row: dict) -> None:
    """Keep each scenario's figures (for the durability table in the notes); printed with -s too."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "durability.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(row)


async def pending(handle: WorkflowHandle) -> dict[str, int]:
    """activity type -> state, for the activities in flight right now."""
    desc = await handle.describe()
    return {a.activity_type.name: a.state for a in desc.raw_description.pending_activities}


async def kill_point_reached(handle: WorkflowHandle, point: str) -> bool:
    if point == "after_inject":
        desc = await handle.describe()
        injected = desc.typed_search_attributes.get(Attr.FAULT_STATE) == FaultState.INJECTED.value
        return injected and "inject_fault" not in {a.activity_type.name for a in
                                                    desc.raw_description.pending_activities}
    running = await pending(handle)
    wanted = {"during_detect": ["detect_violation"], "during_diagnose": ["gather_evidence", "diagnose"],
              "during_restore": ["restore_fault", "wait_healthy"]}[point]
    # In flight: scheduled or started. A detection that sees a killed member refuse at once lasts a few tens of
    # milliseconds, about what one describe takes on a busy host: waiting for "started" alone missed it (CI, once).
    return any(name in running for name in wanted)


async def resume_seconds(handle: WorkflowHandle, killed_at: float, new_pid: int) -> float:
    """Seconds from the SIGKILL to the first task (workflow or activity) the replacement worker started."""
    history = await handle.fetch_history()
    for event in history.events:
        attrs = (event.workflow_task_started_event_attributes
                 if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
                 else event.activity_task_started_event_attributes
                 if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED else None)
        if attrs is not None and attrs.identity.startswith(f"{new_pid}@"):
            return round(event.event_time.ToDatetime(timezone.utc).timestamp() - killed_at, 3)
    raise AssertionError("the replacement worker never started a task")


def chaos_input(etcd, **kw) -> ChaosInput:
    # A leader kill with a generous check timeout keeps detection busy for about an election, so the
    # "during detection" kill point is hit while the activity really runs.
    return ChaosInput(subject=etcd.ref, countdown_s=1, check_timeout_s=2.0, **kw)


def cli_env(client: Client, task_queue: str, tmp_path, **extra: str) -> dict[str, str]:
    """`starter.py` talking to this test's server and task queue, with its state in the test's directory."""
    return command_env(client.service_client.config.target_host, tmp_path, CHAOS_TASK_QUEUE=task_queue, **extra)


async def held_at(client: Client, task_queue: str, etcd, target: str, gate: str = "detect",
                  **kw) -> WorkflowHandle:
    """An interactive run on `etcd` against `target`, holding before `gate` (at detect: the fault is injected)."""
    handle = await client.start_workflow(
        ChaosDemoWorkflow.run, chaos_input(etcd, target=target, interactive=True, **kw),
        id=etcd.instance.project, task_queue=task_queue)
    await walk_to_gate(handle, gate)
    return handle


async def terminated_with_its_guard(client: Client, task_queue: str, etcd, target: str) -> WorkflowHandle:
    """A fault no guard watches: the run and its guard terminated together (a bulk terminate), like a run from
    before guards existed. Only the reaper (`starter.py reap`) restores this one."""
    handle = await held_at(client, task_queue, etcd, target)
    await client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id)).terminate(reason="bulk terminate")
    await handle.terminate(reason="bulk terminate")
    return handle


async def current_leader(etcd) -> str:
    return (await etcd.wait_healthy()).roles["leader"]


@pytest.mark.parametrize("point", ["after_inject", "during_detect", "during_diagnose", "during_restore"])
async def test_worker_sigkill_at_any_point_still_restores(client, task_queue, etcd, tmp_path, point):
    leader = await current_leader(etcd)
    since = datetime.now(timezone.utc)
    first = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    second = None
    try:
        handle = await client.start_workflow(ChaosDemoWorkflow.run, chaos_input(etcd, target=leader),
                                             id=etcd.instance.project, task_queue=task_queue,
                                             task_timeout=WORKFLOW_TASK_TIMEOUT)
        deadline = time.monotonic() + 60
        while not await kill_point_reached(handle, point):
            assert time.monotonic() < deadline, f"kill point {point} never reached"
            await asyncio.sleep(0.005)
        killed_at = first.sigkill()
        second = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path)
        report = await asyncio.wait_for(final_report(handle), 180)
        resumed = await resume_seconds(handle, killed_at, second.proc.pid)
    finally:
        first.stop()
        if second:
            second.stop()

    deaths = await etcd.deaths_since(since)
    assert [svc for svc, _ in deaths] == [leader], deaths  # exactly one container was ever killed
    assert report.verdict == "pass", report.reasons
    assert report.fault_state == FaultState.RESTORED
    assert all((await etcd.running()).values()) and (await etcd.check()).ok
    # TTD is measured from the real injection: the report's injection time is when Docker saw the container die.
    assert abs((report.injected_at - deaths[0][1]).total_seconds()) < 1.0, (report.injected_at, deaths)
    assert report.time_to_detect_s is not None and report.time_to_detect_s >= 0
    record({"scenario": f"worker SIGKILL {point}", "restored": True, "containers_killed": len(deaths),
            "resume_s": resumed, "ttd_s": report.time_to_detect_s, "ttr_s": report.time_to_restore_s})


async def test_a_worker_stopped_with_sigterm_hands_its_watch_back_and_another_worker_restores(
        client, task_queue, etcd, tmp_path):
    """A deploy stops the worker gracefully while a fault is on: the guard's watch (which would run for the whole
    run) is handed back at once and taken by the next worker, which then finishes the run and its restore."""
    since = datetime.now(timezone.utc)
    first = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    second = None
    try:
        handle = await held_at(client, task_queue, etcd, "etcd2")  # etcd2 killed; the guard watches the run
        guard = client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id))
        while (await pending(guard)).get("wait_until_run_closes") != STARTED:
            await asyncio.sleep(0.05)
        first.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.proc.wait, 30)  # the watch does not hold the worker's exit
        watch = next(a for a in (await guard.describe()).raw_description.pending_activities
                     if a.activity_type.name == "wait_until_run_closes")
        assert watch.attempt == 2 and watch.last_failure.message == HANDED_BACK_MESSAGE, watch
        # A deploy's stop is routine: the worker's log says nothing failed (the SDK logged a warning with a
        # traceback for each activity handed back, until they were marked benign).
        stopped = first.log.read_text()
        assert "Traceback" not in stopped and "Completing activity as failed" not in stopped, stopped[-3000:]
        second = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path)
        await asyncio.to_thread(second.wait_ready)
        await walk_to_end(handle)
        report = await final_report(handle)
    finally:
        first.stop()
        if second:
            second.stop()
    assert report.verdict == "pass" and report.fault_state == FaultState.RESTORED, report.reasons
    assert (await etcd.died_since(since)) == ["etcd2"]
    assert all((await etcd.running()).values())


async def test_cancel_right_after_injection_restores_via_the_cli(client, task_queue, etcd, tmp_path):
    since = datetime.now(timezone.utc)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        handle = await held_at(client, task_queue, etcd, "etcd3", detect_timeout_s=60)  # fault injected, holding
        assert (await etcd.running())["etcd3"] is False
        proc = await asyncio.to_thread(
            starter, "cancel", etcd.instance.project, timeout=120,
            env=cli_env(client, task_queue, tmp_path),
        )
    finally:
        worker.stop()
    assert proc.returncode == 130, proc.stderr
    assert f"run {etcd.instance.project} cancelled: the fault on etcd3 (kill) had been injected and was restored" \
        in proc.stderr, proc.stderr
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(Attr.FAULT_STATE) == FaultState.RESTORED.value
    assert (await etcd.died_since(since)) == ["etcd3"]
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok


async def test_terminate_after_injection_is_restored_by_the_runs_guard_and_status_says_why_while_it_cannot(
        client, task_queue, etcd, tmp_path):
    """The guard the run started right before its kill watches it close, then restores what it left. While it cannot
    (here the killed member's published port is taken, so Docker cannot start it), `status` of the terminated run
    says that its guard is restoring, which attempt, and Docker's reason; afterwards, that the guard restored it."""
    since = datetime.now(timezone.utc)
    port = urlsplit(etcd.instance.subject.endpoints(etcd.instance.port_base)["etcd1"]).port
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    env = cli_env(client, task_queue, tmp_path, COLUMNS="400")  # one line a row: the assertions read phrases
    taker = socket.socket()
    try:
        handle = await held_at(client, task_queue, etcd, "etcd1")  # etcd1 killed: its port is free
        taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taker.bind(("127.0.0.1", port))
        taker.listen()
        await handle.terminate(reason="simulating an operator's terminate")  # no workflow code runs after this

        async def status_says_retrying():
            shown = await asyncio.to_thread(starter, "status", etcd.instance.project, env=env)
            return shown if "address already in use" in shown.stdout else None

        while_held, _ = await until(120, status_says_retrying)
        taker.close()
        freed_at = time.monotonic()
        guard = client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id), result_type=GuardReport)
        report = await asyncio.wait_for(guard.result(), 60)
        restored_after = round(time.monotonic() - freed_at, 1)
        after = await asyncio.to_thread(starter, "status", etcd.instance.project, env=env)
        assert (report.run_status, report.fault_state) == ("TERMINATED", FaultState.INJECTED), report
        assert report.action.action == "restored" and report.action.target == "etcd1", report
        assert report.action.healthy_after is True
        assert (await etcd.running())["etcd1"] and (await etcd.wait_healthy()).ok
    finally:
        taker.close()
        worker.stop()
    # A terminated run has no report (exit 1), but what became of its fault is said, not left to the web UI.
    assert while_held.returncode == 1 and "was terminated (simulating an operator" in while_held.stderr, \
        while_held.stderr
    assert f"fault guard {guard.id}: restoring etcd1" in while_held.stdout, while_held.stdout
    assert "reap_fault: attempt" in while_held.stdout, while_held.stdout
    assert after.returncode == 1 and f"fault guard {guard.id}: etcd1 restored, healthy after" in after.stdout, \
        after.stdout
    assert (await etcd.died_since(since)) == ["etcd1"]
    # Its history stops at the terminate, before any safety check: still checkable as the run would have, unasked.
    folder = tmp_path / "histories" / handle.id / handle.result_run_id
    checked = await asyncio.to_thread(starter, "check", "--json", str(folder), env=env)
    assert checked.returncode in (0, 1), checked.stderr
    assert json.loads(checked.stdout)["model"] == "cas-register", checked.stdout  # etcd's, as a run checks it
    record({"scenario": "terminate after inject", "restored": True, "containers_killed": 1,
            "restored_after_s": restored_after})


async def test_a_worker_starts_nothing_on_its_own_and_retires_the_minute_reaper_schedule(client, task_queue,
                                                                                       tmp_path):
    """Earlier versions swept on a Schedule: a reaper run in the web UI's list every minute, doing nothing."""
    legacy = client.get_schedule_handle(f"chaos-fault-reaper-{task_queue}")
    await client.create_schedule(legacy.id, Schedule(
        action=ScheduleActionStartWorkflow(REAPER_WORKFLOW, ReapRequest(task_queue=task_queue), id=f"{legacy.id}-run",
                                           task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=1))]),
        # Paused: a schedule that fires on the minute may start its own run before the worker retires it, and that
        # run is the schedule's, not the worker's (CI51 counted one).
        state=ScheduleState(paused=True)))
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        await asyncio.sleep(3)
        with pytest.raises(RPCError) as gone:
            await legacy.describe()
        assert gone.value.status == RPCStatusCode.NOT_FOUND
        # The one workflow a worker starts is its host's record (one per host, for as long as the host serves).
        assert (await client.count_workflows(
            f'TaskQueue="{task_queue}" AND WorkflowType!="{HOST_WORKFLOW_NAME}"')).count == 0
        assert (await client.count_workflows(
            f'TaskQueue="{task_queue}" AND WorkflowType="{HOST_WORKFLOW_NAME}"')).count == 1
    finally:
        worker.stop()
        with contextlib.suppress(RPCError):
            await legacy.delete()


async def test_dev_server_restart_mid_run_still_restores(etcd, tmp_path):
    since = datetime.now(timezone.utc)
    port = free_port_base(2, 29000, 29900) + 1
    db = tmp_path / "temporal.db"
    command = dev_server_command(port=port, ui_port=port + 1, db_file=db) + ["--headless"]

    def start_server() -> subprocess.Popen:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def connect() -> Client:
        for _ in range(100):
            try:
                return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
            except RuntimeError:
                await asyncio.sleep(0.2)
        raise AssertionError("dev server did not come up")

    server = start_server()
    queue = f"t-{uuid.uuid4().hex[:8]}"
    worker = None
    try:
        client = await connect()
        worker = WorkerProcess(f"127.0.0.1:{port}", queue, tmp_path).wait_ready()
        handle = await held_at(client, queue, etcd, "etcd2")  # the fault is injected and the run is holding
        # The server dies with the fault injected and the run holding at the detect gate.
        server.kill()
        server.wait(10)
        await asyncio.sleep(1)
        server = start_server()
        client = await connect()
        handle = client.get_workflow_handle_for(ChaosDemoWorkflow.run, etcd.instance.project,
                                                run_id=handle.result_run_id)
        await walk_to_end(handle)
        report = await asyncio.wait_for(final_report(handle), 120)
    finally:
        if worker:
            worker.stop()
        server.terminate()
        server.wait(10)
    assert report.verdict == "pass", report.reasons
    assert report.fault_state == FaultState.RESTORED
    assert (await etcd.died_since(since)) == ["etcd2"]
    assert all((await etcd.running()).values())
    record({"scenario": "dev server restart after inject", "restored": True, "containers_killed": 1})


@pytest.mark.parametrize("as_json", [False, True])
async def test_abort_via_the_cli_restores_at_once_and_prints_the_report(client, task_queue, etcd, tmp_path, as_json):
    since = datetime.now(timezone.utc)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    env = cli_env(client, task_queue, tmp_path)
    try:
        handle = await held_at(client, task_queue, etcd, "etcd2", gate="inject")
        # Another terminal releases the kill, as Enter would in the run's own.
        released = await asyncio.to_thread(starter, "advance", etcd.instance.project, env=env)
        assert released.returncode == 0 and "released inject" in released.stderr, released.stderr
        await walk_to_gate(handle, "detect")  # the fault is injected and the run is holding
        # While it runs, `status` and `report` show where it is; a document report needs the finished run.
        status = await asyncio.to_thread(starter, "status", etcd.instance.project, env=env)
        live = await asyncio.to_thread(starter, "report", etcd.instance.project, env=env)
        html = await asyncio.to_thread(starter, "report", etcd.instance.project, "--format", "html", env=env)
        proc = await asyncio.to_thread(starter, "abort", etcd.instance.project, "--reason", "game day over",
                                       *(["--json"] if as_json else []), env=env, timeout=120)
    finally:
        worker.stop()
    assert status.returncode == 0, status.stderr
    assert "etcd2" in status.stdout and "injected" in status.stdout and "advance" in status.stdout, status.stdout
    assert live.returncode == 0, live.stderr
    progress = json.loads(live.stdout)
    assert (progress["target"], progress["fault_state"], progress["waiting_for"]) == ("etcd2", "injected", "detect")
    assert html.returncode == 2 and "still running" in html.stderr and len(html.stderr.strip().splitlines()) == 1
    assert proc.returncode == 0, proc.stderr
    if as_json:
        report = json.loads(proc.stdout)
        assert report["fault_state"] == "restored" and report["target"] == "etcd2"
        # Held at the detect gate: the reasons say the run was aborted before detection, not that detection timed out.
        assert "aborted before detection: game day over" in report["reasons"], report["reasons"]
        assert not any("not detected" in r for r in report["reasons"]), report["reasons"]
    else:  # the verdict panel `chaos` ends with, not hundreds of lines of JSON
        assert not proc.stdout.lstrip().startswith("{"), proc.stdout
        assert "verdict: FAIL" in proc.stdout and "game day over" in proc.stdout, proc.stdout
        assert "etcd2" in proc.stdout and "restored" in proc.stdout, proc.stdout
        assert len(proc.stdout.splitlines()) < 60, proc.stdout
    assert (await etcd.died_since(since)) == ["etcd2"]
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok


async def test_advance_refuses_a_run_that_is_not_holding_and_kills_nothing(client, task_queue, etcd, tmp_path):
    since = datetime.now(timezone.utc)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    env = cli_env(client, task_queue, tmp_path)
    try:
        handle = await client.start_workflow(  # not interactive, counting down from a minute: nothing is held
            ChaosDemoWorkflow.run, ChaosInput(subject=etcd.ref, target="etcd1", countdown_s=60),
            id=etcd.instance.project, task_queue=task_queue)
        while (await handle.query(ChaosDemoWorkflow.progress)).stage.value != "countdown":
            await asyncio.sleep(0.1)
        proc = await asyncio.to_thread(starter, "advance", etcd.instance.project, env=env)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):  # cancelled in the countdown: ends without a kill
            await handle.result()
    finally:
        worker.stop()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: run {etcd.instance.project} cannot advance: "
                                                "the run is not waiting (stage: countdown)"], proc.stderr
    assert (await etcd.died_since(since)) == []


async def test_watch_attaches_to_a_running_run_and_ctrl_c_only_stops_watching(client, task_queue, etcd, tmp_path):
    since = datetime.now(timezone.utc)
    env = cli_env(client, task_queue, tmp_path)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()

    async def watcher(*args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "starter.py"), "watch",
                                                    etcd.instance.project, *args, cwd=ROOT, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        seen = []
        while not (seen and seen[-1].startswith(b"watching run")):  # attached: the live view comes next
            seen.append(await asyncio.wait_for(proc.stderr.readline(), 60))
            assert seen[-1], seen  # EOF: the watcher ended before attaching
        return proc

    try:
        handle = await held_at(client, task_queue, etcd, "etcd1", gate="countdown")
        # A watcher that only looks on: Ctrl-C ends the watching, not the run.
        first = await watcher()
        await asyncio.sleep(2)
        first.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == 130 and b"stopped watching" in err, err
        progress = await handle.query(ChaosDemoWorkflow.progress)
        assert (await handle.describe()).status.name == "RUNNING" and progress.waiting_for.value == "countdown"
        # A second one follows it to the end and prints the report.
        second = await watcher("--json")
        await walk_to_end(handle)
        out, err = await asyncio.wait_for(second.communicate(), 60)
    finally:
        worker.stop()
    assert second.returncode == 0, err
    report = json.loads(out)
    assert (report["workflow_id"], report["target"], report["verdict"]) == (etcd.instance.project, "etcd1", "pass")
    assert (await etcd.died_since(since)) == ["etcd1"]


async def reap_until_restored(env: dict[str, str]):
    """`starter.py reap` until it restores something: visibility is eventually consistent, so a run terminated
    moments ago may not be listed yet. Returns the last attempt."""
    proc = None
    for _ in range(20):
        proc = await asyncio.to_thread(starter, "reap", env=env, timeout=120)
        if "restored" in proc.stderr:
            break
        await asyncio.sleep(0.5)
    return proc


async def test_reap_now_restores_what_a_terminated_run_left(client, task_queue, etcd, tmp_path):
    since = datetime.now(timezone.utc)
    env = cli_env(client, task_queue, tmp_path)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        await terminated_with_its_guard(client, task_queue, etcd, "etcd3")
        assert (await etcd.running())["etcd3"] is False  # nothing restores it: its guard is gone too
        proc = await reap_until_restored(env)
    finally:
        worker.stop()
    assert proc.returncode == 0, proc.stderr
    assert "etcd3" in proc.stderr and "restored" in proc.stderr, proc.stderr
    assert (await etcd.died_since(since)) == ["etcd3"]
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok


async def test_reaper_leaves_alone_a_node_that_a_newer_run_took_after_the_search(client, task_queue, etcd, tmp_path):
    """The race between the reaper's search and its restore: a run that starts in between owns the node."""
    since = datetime.now(timezone.utc)
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    try:
        old = await terminated_with_its_guard(client, task_queue, etcd, "etcd3")
        # What the reaper's search found a moment ago: the terminated run's fault, subject free.
        orphan = OrphanedFault(workflow_id=old.id, run_id=old.result_run_id, status="TERMINATED",
                               fault=FaultRequest(subject=etcd.ref, fault="kill", target="etcd3"))
        # Then a new run takes the subject (its preflight brings etcd3 back up) and kills etcd3 itself.
        new = await held_at(client, task_queue, etcd, "etcd3")
        action = await ActivityEnvironment(client=client).run(reap_fault, orphan)
        assert action.action == "skipped: subject busy"
        assert (await etcd.running())["etcd3"] is False  # still the new run's fault, untouched
        await new.execute_update(ChaosDemoWorkflow.abort, "test over")
        report = await final_report(new)
    finally:
        worker.stop()
    assert report.fault_state == FaultState.RESTORED
    assert (await etcd.died_since(since)) == ["etcd3", "etcd3"]
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok


HELD_S = 3.0  # how long the member's port stays taken after `status` has said why the restore fails


async def test_a_restore_that_keeps_failing_says_why_in_status_and_lands_once_the_cause_is_gone(client, task_queue,
                                                                                                  etcd, tmp_path):
    """Session 20's leftover: a member that nothing repairs left the restore retrying without saying why. Here the
    killed member's published port is taken while it is down (another program bound it), so Docker cannot start it
    again. `status` says which stage is retried, how often, and Docker's reason; once the port is free, the restore's
    next attempt brings the member back, the run ends restored, and its report says after how many attempts, with
    its time to restore counted from the first."""
    since = datetime.now(timezone.utc)
    port = urlsplit(etcd.instance.subject.endpoints(etcd.instance.port_base)["etcd2"]).port
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    env = cli_env(client, task_queue, tmp_path, COLUMNS="400")  # one line a row: the assertions read phrases
    taker = socket.socket()
    try:
        handle = await held_at(client, task_queue, etcd, "etcd2")  # etcd2 killed: its port is free
        taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taker.bind(("127.0.0.1", port))
        taker.listen()

        async def status_says_retrying():
            with contextlib.suppress(Exception):  # the run may pass the gate between the query and the update
                if (await handle.query("progress", result_type=Progress)).waiting_for is not None:
                    await handle.execute_update("advance")
            shown = await asyncio.to_thread(starter, "status", etcd.instance.project, env=env)
            return shown if "retrying" in shown.stdout else None

        status, _ = await until(120, status_says_retrying)
        await asyncio.sleep(HELD_S)  # the restore keeps failing meanwhile: time to restore must count it
        taker.close()
        report = await final_report(handle)
    finally:
        taker.close()
        worker.stop()
    assert status.returncode == 0, status.stderr
    assert "restore_fault: attempt" in status.stdout, status.stdout
    assert "address already in use" in status.stdout, status.stdout
    assert report.fault_state == FaultState.RESTORED and report.target == "etcd2", report.reasons
    assert any(r.startswith("etcd2 restored on attempt ") for r in report.reasons), report.reasons
    assert report.time_to_restore_s > HELD_S, report.time_to_restore_s  # from the first attempt, not the last
    assert (await etcd.died_since(since)) == ["etcd2"]
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok
