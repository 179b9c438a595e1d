"""A worker runs ahead of the subjects it tests: it raises its own scheduling priority when it may
(runtime/priority.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from durable_chaos.runtime.priority import NICE, start_ahead
from tests.conftest import ROOT

RAISE = ("from durable_chaos.runtime.priority import run_ahead; import os; print(run_ahead()); "
         "print(os.getpriority(os.PRIO_PROCESS, 0))")


def _run_ahead_in(nice: int, drop_root: bool = False) -> tuple[str, int]:
    """run_ahead() in a fresh process started at priority `nice` (absolute: this test process may run raised
    already, as any process that ran a worker does), optionally as an unprivileged user."""
    cmd = [sys.executable, "-c", RAISE]
    if drop_root:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    out = subprocess.run(cmd, preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, nice), capture_output=True,
                         text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         env={**os.environ, "PYTHONPATH": "."})
    line, priority = out.stdout.strip().splitlines()
    return line, int(priority)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (or CAP_SYS_NICE) may raise a priority")
def test_a_worker_allowed_to_raises_its_priority_above_the_containers():
    line, priority = _run_ahead_in(0)
    assert priority == NICE and "ahead of the subjects" in line, line


# A thread started before run_ahead(), as the SDK's own (its heartbeats and polls) are, once the client connects.
EVERY_THREAD = """
import os, threading
from durable_chaos.runtime.priority import run_ahead
started, done = threading.Event(), threading.Event()
def sdk_thread():
    started.set()
    done.wait()
thread = threading.Thread(target=sdk_thread)
thread.start()
started.wait()
run_ahead()
print(os.getpriority(os.PRIO_PROCESS, thread.native_id))
done.set()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (or CAP_SYS_NICE) may raise a priority")
def test_every_thread_of_the_worker_runs_ahead_not_only_the_one_that_asked():
    out = subprocess.run([sys.executable, "-c", EVERY_THREAD], preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0),
                         capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": "."})
    assert int(out.stdout.strip()) == NICE, out.stdout


AUTOGROUPS = Path("/proc/sys/kernel/sched_autogroup_enabled")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (or CAP_SYS_NICE) may raise a priority")
@pytest.mark.skipif(not AUTOGROUPS.exists() or AUTOGROUPS.read_text().strip() != "1",
                    reason="the kernel does not group processes by session (autogroup)")
def test_a_worker_raises_its_sessions_scheduling_group_not_only_its_threads():
    """With autogroup (these machines), a whole terminal session competes with Docker's containers as one group,
    whatever its threads' nice: the 20-copy sweep's worker waited for a core half of each second at nice -10."""
    worker = subprocess.Popen([sys.executable, "-c", RAISE + "; import sys; sys.stdin.read()"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": "."}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, start_new_session=True,  # a session of its own, as a terminal's
                              preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0))
    try:
        line = worker.stdout.readline()
        group = Path(f"/proc/{worker.pid}/autogroup").read_text()
    finally:
        worker.communicate("", timeout=10)
    assert group.endswith(f"nice {NICE}\n") and "session's scheduling group" in line, (group, line)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (or CAP_SYS_NICE) may raise a priority")
@pytest.mark.skipif(not AUTOGROUPS.exists() or AUTOGROUPS.read_text().strip() != "1",
                    reason="the kernel does not group processes by session (autogroup)")
def test_the_embedded_server_in_its_own_session_runs_ahead_as_a_group_too():
    """The CLI starts the Temporal server in a session of its own (it outlives the command): a group of its own,
    which its nice alone would leave level with Docker's containers."""
    server = subprocess.Popen(["sleep", "30"], start_new_session=True, preexec_fn=start_ahead)
    try:
        group = Path(f"/proc/{server.pid}/autogroup").read_text()
        assert group.endswith(f"nice {NICE}\n") and os.getpriority(os.PRIO_PROCESS, server.pid) == NICE, group
        assert group != Path("/proc/self/autogroup").read_text()  # its own group, not this test's
    finally:
        server.kill()
        server.wait()


def test_a_worker_not_allowed_to_says_so_and_keeps_running_at_its_priority():
    line, priority = _run_ahead_in(5, drop_root=True)
    assert priority == 5 and "not allowed to raise it" in line and "CAP_SYS_NICE" in line, line


# What a worker started with CHAOS_WORKER_REALTIME=1 does: its threads real-time, what it starts later normal.
REALTIME = """
import os, subprocess, threading
from durable_chaos.runtime.priority import run_ahead
print(run_ahead())
print(os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_RR)
later = []
thread = threading.Thread(target=lambda: later.append(os.sched_getscheduler(0)))
thread.start()
thread.join()
print(later[0] == os.SCHED_OTHER)
print(subprocess.run(["chrt", "-p", str(os.getpid())], capture_output=True, text=True).stdout.count("SCHED_RR") == 1)
print(subprocess.run(["sh", "-c", "chrt -p $$"], capture_output=True, text=True).stdout.count("SCHED_OTHER") == 1)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (or CAP_SYS_NICE) may take a real-time priority")
def test_a_realtime_worker_runs_ahead_of_everything_but_starts_the_docker_cli_as_a_normal_process():
    out = subprocess.run([sys.executable, "-c", REALTIME], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ".", "CHAOS_WORKER_REALTIME": "1"})
    line, *checks = out.stdout.strip().splitlines()
    assert "real-time" in line, line
    assert checks == ["True"] * 4, checks  # this thread RR; a thread and a process it starts later: normal
