"""`python starter.py chaos` as a user runs it: a real subprocess, a real dev server, a real etcd cluster."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timezone

import pyte
import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from durable_chaos.cli.common import has_live_worker
from durable_chaos.cli.facts import RunFacts
from durable_chaos.contracts import ChaosInput, ChaosReport, final_report
from durable_chaos.contracts import RunFacts as MemoFacts
from durable_chaos.hosts import default_host
from durable_chaos.ids import run_workflow_id
from tests.conftest import (
    ROOT,
    command_env,
    running_worker,
    starter,
    subject_args,
    until,
    walk_to_gate,
)
from tests.integration.test_durability import held_at
from tests.workers import WorkerProcess
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (24500, 24990)


@pytest.fixture
def cli_env(client, tmp_path) -> dict[str, str]:
    return command_env(client.service_client.config.target_host, tmp_path)


async def test_chaos_json_exits_0_with_a_report_of_the_killed_and_restored_target(cli_env, etcd):
    since = datetime.now(timezone.utc)
    proc = await asyncio.to_thread(starter, "chaos", "--json", "--countdown", "1", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is the report and nothing else
    assert report["verdict"] == "pass"
    assert report["fault_state"] == "restored"
    assert (await etcd.died_since(since)) == [report["target"]]
    assert report["time_to_detect_s"] > 0 and report["time_to_restore_s"] > 0
    assert report["diagnosis"]["correct"] is True
    # The run's URL in the web UI: its id is the subject copy on its host (this machine's, named by none).
    assert f"/workflows/{run_workflow_id(etcd.instance.project, default_host())}/" in proc.stderr
    assert all((await etcd.running()).values())


async def test_an_experiment_file_runs_as_chaos_does_with_its_variables_set(cli_env, etcd):
    proc = await asyncio.to_thread(starter, "run", "examples/etcd-loss-variables.yaml", "--set", "victim=etcd3",
                                   "--set", "percent=40", "--json", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "pass", report["reasons"]
    assert (report["targets"], report["fault_label"]) == (["etcd3"], "loss 40%")
    assert report["fault_state"] == "restored" and report["safety"]["verdict"] == "ok"
    assert all((await etcd.running()).values())


async def test_a_hypothesis_the_fault_breaks_fails_the_run_with_exit_1_and_names_the_probe(cli_env, etcd,
                                                                                           tmp_path):
    experiment = tmp_path / "strict.yaml"
    experiment.write_text("subject: etcd\nsteps:\n  - fault: kill\n    target: etcd2\ntimeouts: {countdown: 0}\n"
                          "hypothesis:\n  - name: not one error\n    figure: error_rate\n    mode: continuously\n"
                          "    tolerance: {'==': 0}\n")
    proc = await asyncio.to_thread(starter, "run", str(experiment), "--json", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "fail" and report["fault_state"] == "restored"
    [probe] = report["hypothesis"]
    assert probe["name"] == "not one error" and not probe["held"] and probe["value"] > 0
    assert f"hypothesis broken: not one error: {probe['detail']}" in report["reasons"]
    assert all((await etcd.running()).values())


@pytest.fixture
def private_queue_env(cli_env) -> dict[str, str]:
    """The CLI on a task queue of its own: no worker has ever polled it unless the test starts one."""
    return dict(cli_env, CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")


async def test_rich_output_says_each_thing_once(cli_env, client, etcd):
    proc = await asyncio.to_thread(starter, "chaos", "--countdown", "0", "--target", "etcd1", *subject_args(etcd),
                                   env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "diagnosis" in proc.stdout and "verdict: PASS" in proc.stdout
    assert "etcd1" in proc.stdout
    run_id = run_workflow_id(etcd.instance.project, default_host())
    report = await final_report(client.get_workflow_handle_for(ChaosDemoWorkflow.run, run_id))
    screen = proc.stdout + proc.stderr
    # The end of a run is read once: the live view gives way to the report, which names each fact one time.
    assert screen.count(f"/workflows/{run_id}/") == 1, screen
    # As figures in seconds ("after 0.053s"): a bare "0.053" can also sit inside a timestamp (10:21:30.053).
    assert screen.count(f"{report.time_to_detect_s:.3f}s") == 1, screen
    assert screen.count(f"{report.time_to_restore_s:.3f}s") == 1, screen
    assert screen.count("no_api_key") + screen.count("no API key") == 1, screen  # the diagnosis source


@pytest.mark.parametrize("command", [[], ["chaos"], ["list"], ["status"], ["abort"], ["subjects"],
                                     ["schedule", "create"]])
def test_help_shows_flags_without_a_value_type(cli_env, command):
    proc = starter(*command, "--help", env=dict(cli_env, COLUMNS="120"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--help" in proc.stdout
    assert "<bool>" not in proc.stdout and "BOOLEAN" not in proc.stdout, proc.stdout


def test_the_cli_reads_every_fact_the_workflow_keeps_in_its_memo():
    # Two definitions on purpose (cli/facts.py says why); a fact added to the memo must reach the CLI's too.
    assert set(MemoFacts.model_fields) <= {f.name for f in fields(RunFacts)}


@pytest.mark.parametrize("command, message", [
    (["chaos", "--countdown", "abc"], "error: Invalid value for '--countdown': "),
    (["schedule", "create", "--count", "x"], "error: Invalid value for '--count': "),
    (["chaos", "--no-such-flag"], "error: No such option: --no-such-flag (see `starter.py chaos --help`)"),
    (["no-such-command"], "error: No such command 'no-such-command' (see `starter.py --help`)"),
])
def test_a_value_click_cannot_parse_exits_2_with_one_line(cli_env, command, message):
    proc = starter(*command, env=cli_env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


@pytest.mark.parametrize("command", [["chaos"], ["list"], ["status", "chaos-etcd"]])
async def test_temporal_unreachable_exits_3_with_one_line(cli_env, command):
    env = dict(cli_env, TEMPORAL_ADDRESS="127.0.0.1:1")
    proc = await asyncio.to_thread(starter, *command, env=env, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: cannot reach Temporal at 127.0.0.1:1 (connection refused)"]


@pytest.mark.parametrize("worker", ["never started", "killed"])
async def test_status_of_a_run_no_worker_serves_answers_at_once(private_queue_env, client, etcd, tmp_path, worker):
    env = private_queue_env
    if worker == "killed":  # a poller the server still lists for a while, that will never answer a query
        dead = WorkerProcess(client.service_client.config.target_host, env["CHAOS_TASK_QUEUE"], tmp_path)
        dead.wait_ready().sigkill()
        dead.stop()
    started = await asyncio.to_thread(starter, "chaos", "--detach", "--json", "--target", "etcd2",
                                      *subject_args(etcd), env=env)
    assert started.returncode == 0, started.stderr
    try:
        began = time.monotonic()
        proc = await asyncio.to_thread(starter, "status", etcd.instance.project, env=env, timeout=120)
        took = time.monotonic() - began
    finally:
        await client.get_workflow_handle(run_workflow_id(etcd.instance.project, default_host())).terminate(
            reason="test cleanup")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # Before, it waited ~32 s for a query no worker would answer. A starter takes a few seconds to import and
    # connect on a busy 2-core host; the bound leaves room for that and for one short query timeout.
    assert took < 25, took
    assert "kill etcd2 on etcd" in proc.stdout, proc.stdout  # what the run does, from the server alone
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if "no worker is serving" in x]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "python worker.py" in lines[0] and f"python starter.py watch {etcd.instance.project}" in lines[0]


@pytest.mark.parametrize("gate, says", [("countdown", "nothing had been injected"),
                                        ("detect", "the fault on etcd2 (kill) had been injected and was restored")])
async def test_a_cancelled_run_is_not_an_error_and_says_what_was_restored(client, task_queue, etcd, tmp_path, gate,
                                                                        says):
    env = command_env(client.service_client.config.target_host, tmp_path, CHAOS_TASK_QUEUE=task_queue)
    async with running_worker(client, task_queue):
        handle = await held_at(client, task_queue, etcd, "etcd2", gate=gate)
        watcher = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "starter.py"), "watch",
                                                       etcd.instance.project, cwd=ROOT, env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        attached = await asyncio.wait_for(watcher.stderr.readline(), 60)
        assert attached.startswith(b"watching run"), attached
        await handle.cancel()  # as `starter.py cancel`, Ctrl-C in `chaos` or the web UI would
        out, err = await asyncio.wait_for(watcher.communicate(), 120)
    err = attached.decode() + err.decode()
    assert watcher.returncode == 130, err
    assert "error:" not in err, err
    line = next(x for x in err.splitlines() if "cancelled" in x)
    assert line.startswith(f"run {etcd.instance.project} cancelled: ") and says in line, err
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok


async def test_list_shows_run_ids_and_the_target_a_cancelled_run_had_chosen(cli_env, client, task_queue, etcd):
    inp = ChaosInput(subject=etcd.ref, target="etcd3", interactive=True, countdown_s=1)
    async with running_worker(client, task_queue):
        # The memo carries what the run decided (the workflow records the chosen target there as it goes).
        handle = await client.start_workflow(ChaosDemoWorkflow.run, inp, id=etcd.instance.project,
                                             task_queue=task_queue, search_attributes=inp.start_attributes(),
                                             memo={"target": "etcd3"})
        await walk_to_gate(handle, "countdown")  # the target is chosen; nothing is injected yet
        await handle.cancel()
        with pytest.raises(Exception):
            await handle.result()
    run_id = handle.result_run_id
    for _ in range(40):  # visibility is eventually consistent
        listed = await asyncio.to_thread(starter, "list", "--json", "--limit", "50", env=cli_env)
        row = next((r for r in json.loads(listed.stdout) if r["run_id"] == run_id), None)
        if row and row["status"] == "CANCELED":
            break
        await asyncio.sleep(0.5)
    assert row["target"] == "etcd3", row
    table = await asyncio.to_thread(starter, "list", "--limit", "50", env=dict(cli_env, COLUMNS="200"))
    line = next(x for x in table.stdout.splitlines() if run_id in x)  # the id `report --run-id` takes
    assert "etcd3" in line and "canceled" in line, line
    picked = await asyncio.to_thread(starter, "report", etcd.instance.project, "--run-id", run_id, env=cli_env)
    assert "cancelled" in picked.stderr, picked.stderr


async def test_worker_window_shows_each_run_start_and_end(client, private_queue_env, etcd, tmp_path):
    env = private_queue_env
    worker = WorkerProcess(client.service_client.config.target_host, env["CHAOS_TASK_QUEUE"], tmp_path).wait_ready()
    try:
        proc = await asyncio.to_thread(starter, "chaos", "--json", "--countdown", "0", "--target", "etcd2",
                                       *subject_args(etcd), env=env)
    finally:
        worker.stop()
    assert proc.returncode == 0, proc.stderr
    report = ChaosReport.model_validate_json(proc.stdout)
    lines = worker.log.read_text().splitlines()
    project = run_workflow_id(etcd.instance.project, default_host())
    start = [x for x in lines if f"{project} started" in x]
    end = [x for x in lines if f"{project} ended" in x]
    assert len(start) == 1 and "kill etcd2 on etcd" in start[0], lines
    assert len(end) == 1, lines
    assert "pass" in end[0] and f"TTD {report.time_to_detect_s:.3f} s" in end[0], end
    assert f"TTR {report.time_to_restore_s:.3f} s" in end[0], end


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "etcd9"], "'etcd9' is not a target of etcd"),
        (["--subject", "nope"], "unknown subject 'nope'"),
        (["--detect-timeout", "0"], "--detect-timeout must be positive"),
        (["--detect-interval", "-1"], "--detect-interval must be positive"),
        (["--countdown", "-1"], "--countdown cannot be negative"),
        (["--load-rate", "0"], "--load-rate must be above 0 and at most 10000"),
        (["--load-rate", "1e6"], "--load-rate must be above 0 and at most 10000"),
        (["--max-error-rate", "-1"], "--max-error-rate is a percentage from 0 to 100 (got -1)"),
        (["--max-p99-ms", "0"], "--max-p99-ms must be positive"),
        (["--abort-probe", "localhost:8080/health"], "--abort-probe is not an http(s) URL with a host"),
        (["--abort-query", "up == 0"], "--abort-query needs --prometheus URL"),
        (["--detect-alert", "EtcdDown"], "--detect-alert needs NAME@URL"),
    ],
)
async def test_bad_input_exits_2_with_one_line_and_kills_nothing(cli_env, etcd, args, message):
    since = datetime.now(timezone.utc)
    proc = await asyncio.to_thread(starter, "chaos", *args, *subject_args(etcd), env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (await etcd.died_since(since)) == []


async def test_docker_unreachable_exits_3_and_kills_nothing(cli_env, etcd):
    since = datetime.now(timezone.utc)
    env = dict(cli_env, DOCKER_HOST="unix:///nonexistent/docker.sock")
    proc = await asyncio.to_thread(starter, "chaos", "--json", *subject_args(etcd), env=env)
    assert proc.returncode == 3, proc.stderr
    assert "Docker is not reachable" in proc.stderr
    assert proc.stdout == ""
    assert (await etcd.died_since(since)) == []
    assert all((await etcd.running()).values())


async def test_second_run_on_a_busy_subject_is_refused(cli_env, client, etcd):
    since = datetime.now(timezone.utc)
    first = await asyncio.to_thread(starter, "chaos", "--detach", "--json", *subject_args(etcd), env=cli_env)
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    try:
        # No worker polls the default queue on this server, so the first run is still open: the subject is busy.
        second = await asyncio.to_thread(starter, "chaos", "--json", *subject_args(etcd), env=cli_env)
        assert second.returncode == 2, second.stderr
        assert "is busy" in second.stderr and etcd.instance.project in second.stderr
    finally:
        await client.get_workflow_handle(started["workflow_id"]).terminate(reason="test cleanup")
    assert (await etcd.died_since(since)) == []


async def test_interactive_run_is_paced_by_enter_presses(cli_env, etcd):
    since = datetime.now(timezone.utc)
    proc = subprocess.Popen([sys.executable, str(ROOT / "starter.py"), "chaos", "--interactive", "--countdown", "0",
                             "--target", "etcd3", *subject_args(etcd)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env, cwd=ROOT)
    try:
        # Nothing is killed until Enter is pressed: the run holds before the countdown and before the kill.
        await asyncio.sleep(8)
        assert proc.poll() is None
        assert (await etcd.died_since(since)) == []
        for _ in range(240):
            if proc.poll() is not None:
                break
            proc.stdin.write("\n")
            proc.stdin.flush()
            await asyncio.sleep(0.25)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "press Enter to start inject" in out + err
    assert "verdict: PASS" in out
    assert (await etcd.died_since(since)) == ["etcd3"]


async def test_chaos_terminated_with_its_fault_on_says_its_guard_restores_it(private_queue_env, client, etcd):
    """`chaos` with no worker runs one in its own process; terminated with the fault on, that worker gives the run's
    fault guard its restore before the command exits. Before, it waited up to 90 s saying nothing, and then printed
    only that the run was terminated: the user could not tell whether etcd2 was back."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "starter.py"), "chaos", "--interactive", "--countdown", "0",
                             "--target", "etcd2", *subject_args(etcd)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=private_queue_env, cwd=ROOT)
    queue = private_queue_env["CHAOS_TASK_QUEUE"]
    handle = client.get_workflow_handle(run_workflow_id(etcd.instance.project, default_host()))

    async def started() -> bool:
        """This command's run is running (an earlier test's run on the copy has the same id, closed) and its worker
        polls: the run's progress is a query only that worker answers."""
        with contextlib.suppress(RPCError):
            return ((await handle.describe()).status == WorkflowExecutionStatus.RUNNING
                    and await has_live_worker(client, queue))
        return False

    try:
        await until(120, started)
        await walk_to_gate(handle, "detect")  # etcd2 is killed, and the run holds
        await handle.terminate(reason="game day: operator stopped the run")
        out, err = await asyncio.to_thread(proc.communicate, timeout=180)
    finally:
        if proc.poll() is None:  # the test failed on the way: leave the copy whole for the tests after it
            proc.kill()
            proc.wait()
            with contextlib.suppress(RPCError):
                await handle.terminate(reason="test cleanup")
            async with running_worker(client, queue):  # the run's guard restores etcd2
                await etcd.wait_healthy()
    lines = err.splitlines()
    assert proc.returncode == 1, err
    waiting = next(i for i, line in enumerate(lines) if "waiting" in line and "fault guard" in line)
    assert "etcd2" in lines[waiting] and "90 s" in lines[waiting], lines[waiting]
    done = next(i for i, line in enumerate(lines) if line.startswith("fault guard ") and "etcd2 restored" in line)
    assert waiting < done and "healthy after" in lines[done], err
    assert any("was terminated (game day: operator stopped the run)" in line for line in lines[done:]), err
    assert all((await etcd.running()).values()) and (await etcd.wait_healthy()).ok


# -- the live view in a real terminal (a pty, rendered by a terminal emulator) ------------------------------------

@dataclass
class TerminalSession:
    exit_code: int
    screens: list[list[str]]  # what the terminal showed, each time output arrived
    final: list[str]


def _run_in_terminal(argv: list[str], env: dict[str, str], rows: int = 50, cols: int = 120,
                     timeout: float = 240) -> TerminalSession:
    """Run a command in a pseudo-terminal as a user's terminal would, pressing Enter every half second."""
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, its stdin/stdout/stderr on the terminal
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, *argv], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    screens, deadline, next_enter = [], time.monotonic() + timeout, time.monotonic() + 5
    status, closed = None, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data:
                    closed = True
                    break
                stream.feed(data)
                screens.append(list(screen.display))
            if time.monotonic() > next_enter:
                with contextlib.suppress(OSError):
                    os.write(fd, b"\r")
                next_enter = time.monotonic() + 0.5
        if closed:  # past the deadline the command is still running: the `finally` kills it, nothing waits on it
            _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return TerminalSession(os.waitstatus_to_exitcode(status) if status is not None else -1, screens,
                           [line.rstrip() for line in screen.display])


@pytest_asyncio.fixture(scope="module")
async def interactive_terminal(temporal_env, etcd, tmp_path_factory) -> TerminalSession:
    """One `chaos --interactive` run in a 120x50 terminal, every stage released by Enter."""
    env = command_env(temporal_env.client.service_client.config.target_host, tmp_path_factory.mktemp("tty"))
    since = datetime.now(timezone.utc)
    session = await asyncio.to_thread(_run_in_terminal, [str(ROOT / "starter.py"), "chaos", "--interactive",
                                                         "--countdown", "1", "--target", "etcd3",
                                                         *subject_args(etcd)], env)
    assert session.exit_code == 0, "\n".join(session.final)
    assert (await etcd.died_since(since)) == ["etcd3"]
    return session


def test_interactive_terminal_is_left_clean(interactive_terminal):
    final = interactive_terminal.final
    text = "\n".join(final)
    assert "verdict: PASS" in text, text
    # Enter presses must not push stale frames of the live view up the screen: every panel left on it is whole
    # (a top border, then its bottom border, before the next one starts), and the live view itself is gone.
    tops = [i for i, line in enumerate(final) if line.startswith("╭")]
    bottoms = [i for i, line in enumerate(final) if line.startswith("╰")]
    assert len(tops) == len(bottoms) and all(t < b for t, b in zip(tops, bottoms)), text
    assert all(b < t for b, t in zip(bottoms, tops[1:])), text
    assert "chaos run on" not in text, text


def test_live_stage_strip_ticks_finished_stages(interactive_terminal):
    strips = [line for screen in interactive_terminal.screens for line in screen if " preflight " in line]
    assert strips, "the live view never showed its stage strip"
    at_detect = [s for s in strips if "✓ inject" in s and "✓ detect" not in s]
    assert any("✓ preflight" in s and "✓ countdown" in s for s in at_detect), strips[-5:]


def test_live_diagnosis_is_one_short_line(interactive_terminal):
    rows = [line for screen in interactive_terminal.screens for line in screen if "│ diagnosis " in line]
    assert rows, "the live view never showed the diagnosis"
    assert any("etcd3 ✓ correct · rules engine (no API key)" in r for r in rows), rows[-1]
    assert not any("((" in r or "))" in r for r in rows), rows[-1]
