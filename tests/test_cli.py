"""`python starter.py chaos` as a user runs it: a real subprocess, a real dev server, a real etcd cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import ROOT, command_env, starter, subject_args

PORT_RANGE = (24500, 24990)


@pytest.fixture
def cli_env(client, tmp_path) -> dict[str, str]:
    return command_env(client.service_client.config.target_host, tmp_path)


async def test_chaos_json_exits_0_with_a_report_of_the_killed_and_restored_target(cli_env, etcd):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    proc = await asyncio.to_thread(starter, "chaos", "--json", "--countdown", "1", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is the report and nothing else
    assert report["verdict"] == "pass"
    assert report["fault_state"] == "restored"
    assert etcd.died_since(since) == [report["target"]]
    assert report["time_to_detect_s"] > 0 and report["time_to_restore_s"] > 0
    assert report["diagnosis"]["correct"] is True
    assert f"/workflows/{etcd.instance.project}/" in proc.stderr  # the run's URL in the web UI
    assert all(etcd.running().values())


async def test_rich_output_shows_diagnosis_and_verdict(cli_env, etcd):
    proc = await asyncio.to_thread(starter, "chaos", "--countdown", "0", "--target", "etcd1", *subject_args(etcd),
                                   env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "diagnosis" in proc.stdout and "verdict: PASS" in proc.stdout
    assert "etcd1" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "etcd9"], "'etcd9' is not a target of etcd"),
        (["--subject", "nope"], "unknown subject 'nope'"),
        (["--detect-timeout", "0"], "--detect-timeout must be positive"),
        (["--detect-interval", "-1"], "--detect-interval must be positive"),
        (["--countdown", "-1"], "--countdown cannot be negative"),
    ],
)
async def test_bad_input_exits_2_with_one_line_and_kills_nothing(cli_env, etcd, args, message):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    proc = await asyncio.to_thread(starter, "chaos", *args, *subject_args(etcd), env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert etcd.died_since(since) == []


async def test_docker_unreachable_exits_3_and_kills_nothing(cli_env, etcd):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    env = dict(cli_env, DOCKER_HOST="unix:///nonexistent/docker.sock")
    proc = await asyncio.to_thread(starter, "chaos", "--json", *subject_args(etcd), env=env)
    assert proc.returncode == 3, proc.stderr
    assert "Docker is not reachable" in proc.stderr
    assert proc.stdout == ""
    assert etcd.died_since(since) == []
    assert all(etcd.running().values())


async def test_temporal_unreachable_exits_3(cli_env):
    env = dict(cli_env, TEMPORAL_ADDRESS="127.0.0.1:1")
    proc = await asyncio.to_thread(starter, "chaos", env=env, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "Temporal server unreachable" in proc.stderr


async def test_second_run_on_a_busy_subject_is_refused(cli_env, client, etcd):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    first = await asyncio.to_thread(starter, "chaos", "--detach", "--json", *subject_args(etcd), env=cli_env)
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    try:
        # No worker polls the default queue on this server, so the first run is still open: the subject is busy.
        second = await asyncio.to_thread(starter, "chaos", "--json", *subject_args(etcd), env=cli_env)
        assert second.returncode == 2, second.stderr
        assert "is busy" in second.stderr and etcd.instance.project in second.stderr
    finally:
        await client.get_workflow_handle(started["workflow_id"]).terminate("test cleanup")
    assert etcd.died_since(since) == []


async def test_interactive_run_is_paced_by_enter_presses(cli_env, etcd):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    proc = subprocess.Popen([sys.executable, str(ROOT / "starter.py"), "chaos", "--interactive", "--countdown", "0",
                             "--target", "etcd3", *subject_args(etcd)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env, cwd=ROOT)
    try:
        # Nothing is killed until Enter is pressed: the run holds before the countdown and before the kill.
        await asyncio.sleep(8)
        assert proc.poll() is None
        assert etcd.died_since(since) == []
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
    assert etcd.died_since(since) == ["etcd3"]
