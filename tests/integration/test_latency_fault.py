"""Latency without netem on a real etcd cluster: NFQUEUE in the member's namespace and a delayer the run owns.

The delay is measured from outside the product (HTTP requests to the member's published port, and the load's own
latency), the run detects the member as slow, the delay fails open when its worker and its delayer are SIGKILLed,
and nothing is left after the restore, a cancel or a terminate: no chain, no NFQUEUE rule, no delayer container.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import httpx
import pytest
from python_on_whales import docker
from temporalio.client import WorkflowExecutionStatus

from activities.faults import effect_now, inject_now, restore_now
from durable_chaos.contracts import ChaosInput, FaultRequest, FaultState, GuardReport, Progress, final_report
from durable_chaos.faults.netns import HELPER_LABEL
from durable_chaos.ids import fault_guard_id, fault_tag
from tests.conftest import command_env, run_command, subject_args, walk_to_end, walk_to_gate
from tests.fault_checks import container_ids_blocking, leftovers, net_state_blocking
from tests.integration.test_fault_kinds import record
from tests.workers import WorkerProcess
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (47000, 47990)
TAGS: list[str] = []


def member_url(etcd, service: str) -> str:
    return f"http://127.0.0.1:{etcd.instance.port(etcd.instance.subject.services.index(service) + 1)}"


def median_ms(url: str, n: int = 8) -> float:
    """The median time of `n` GET /health to one member, as any client of it would see them."""
    took = []
    with httpx.Client() as http:
        for _ in range(n):
            began = time.monotonic()
            http.get(f"{url}/health", timeout=10)
            took.append((time.monotonic() - began) * 1000)
    return statistics.median(took)


def queue_rules(etcd, service: str) -> list[str]:
    """NFQUEUE rules and CHAOS chains in the member's namespace, read by our own helper (blocking: the tests that run
    a workflow call it in a thread)."""
    state = net_state_blocking(container_ids_blocking(etcd)[service])
    return [line for line in state.filter.splitlines() if "NFQUEUE" in line or "CHAOS-" in line]


def delayers(tag: str) -> list:
    return docker.container.list(all=True, filters=[("label", f"{HELPER_LABEL}={tag}")])


async def test_latency_on_a_follower_is_measured_detected_as_slow_fails_open_and_is_undone(client, task_queue, etcd,
                                                                                        tmp_path):
    """200 ms on a follower: its answers are late by the delay, the run says slow (not down); then the worker and
    the delayer are SIGKILLed: traffic flows undelayed at once, and a new worker's restore removes the rules."""
    assert (await etcd.wait_healthy()).ok
    address = client.service_client.config.target_host
    first = WorkerProcess(address, task_queue, tmp_path).wait_ready()
    second = None
    inp = ChaosInput(subject=etcd.ref, fault="latency", fault_params={"delay_ms": 200}, target="follower",
                     countdown_s=0, interactive=True, check_timeout_s=2.0, max_fault_s=120)
    handle = await client.start_workflow(ChaosDemoWorkflow.run, inp, id=etcd.instance.project, task_queue=task_queue)
    try:
        await asyncio.wait_for(walk_to_gate(handle, "detect"), 120)  # injected, held before detection
        tag = fault_tag(handle.id, handle.result_run_id)
        TAGS.append(tag)
        target = (await handle.query("progress", result_type=Progress)).target
        url = member_url(etcd, target)
        others = [s for s in etcd.instance.subject.targets if s != target]
        delayed_ms = await asyncio.to_thread(median_ms, url)
        other_ms = await asyncio.to_thread(median_ms, member_url(etcd, others[0]))
        # Its answer leaves 200 ms late, and etcd's /health waits on its own (delayed) read index too.
        assert delayed_ms >= 200 and other_ms < 100, (delayed_ms, other_ms)
        assert any("NFQUEUE" in rule for rule in await asyncio.to_thread(queue_rules, etcd, target))
        await asyncio.wait_for(walk_to_gate(handle, "diagnose"), 120)  # detection done
        first.sigkill()
        (delayer,) = await asyncio.to_thread(delayers, tag)
        await asyncio.to_thread(docker.container.kill, delayer)
        # Fail-open: no program bound to the queue, so --queue-bypass lets every packet pass.
        open_ms = await asyncio.to_thread(median_ms, url)
        assert open_ms < 100, open_ms
        second = WorkerProcess(address, task_queue, tmp_path).wait_ready()
        await asyncio.wait_for(walk_to_end(handle), 180)
        report = await final_report(handle)
    finally:
        first.stop()
        if second:
            second.stop()
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason="test failed")  # its guard restores
    assert report.fault_state == FaultState.RESTORED, report.reasons
    detected = next(r for r in report.reasons if r.startswith("detected after"))
    assert f"{target}: slow: answers in " in detected and "no answer" not in detected, detected
    assert report.diagnosis.affected_nodes == [target], report.diagnosis
    assert "slow: answers in" in report.diagnosis.root_cause and "delay queue" in report.diagnosis.root_cause
    # The load saw it too: a third of its clients go through the delayed member.
    during = report.safety.availability.during
    assert during.p99_ms is not None and during.p99_ms >= 200, during
    assert await asyncio.to_thread(queue_rules, etcd, target) == []
    assert await asyncio.to_thread(delayers, tag) == []
    assert await asyncio.to_thread(median_ms, url) < 100
    record({"scenario": "etcd latency 200ms on a follower", "asked_ms": 200, "health_p50_ms": round(delayed_ms, 1),
            "other_member_ms": round(other_ms, 1), "after_delayer_sigkill_ms": round(open_ms, 1),
            "load_p99_during_ms": during.p99_ms, "detected": detected, "ttd_s": report.time_to_detect_s,
            "ttr_s": report.time_to_restore_s})


@pytest.mark.parametrize("how", ["cancel", "terminate"])
async def test_a_cancel_or_terminate_while_latency_is_on_leaves_no_rule_and_no_delayer(client, task_queue, etcd,
                                                                                     tmp_path, how):
    assert (await etcd.wait_healthy()).ok
    worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
    inp = ChaosInput(subject=etcd.ref, fault="latency", fault_params={"delay_ms": 150, "jitter_ms": 20},
                     target="etcd3", countdown_s=0, interactive=True)
    handle = await client.start_workflow(ChaosDemoWorkflow.run, inp, id=etcd.instance.project, task_queue=task_queue)
    try:
        await asyncio.wait_for(walk_to_gate(handle, "detect"), 120)
        tag = fault_tag(handle.id, handle.result_run_id)
        TAGS.append(tag)
        assert len(await asyncio.to_thread(delayers, tag)) == 1
        if how == "cancel":
            await handle.cancel()
            with pytest.raises(Exception):
                await asyncio.wait_for(handle.result(), 120)
        else:
            await handle.terminate(reason="simulating an operator's terminate")
            guard = client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id),
                                               result_type=GuardReport)
            report = await asyncio.wait_for(guard.result(), 90)
            assert report.action.action == "restored" and report.action.target == "etcd3", report
    finally:
        worker.stop()
    assert await asyncio.to_thread(queue_rules, etcd, "etcd3") == []
    assert await asyncio.to_thread(delayers, tag) == []
    assert (await etcd.wait_healthy()).ok


@pytest.mark.parametrize("kind, params, shows", [
    ("duplicate", {"percent": 50}, "packets sent twice"),
    ("reorder", {"percent": 50, "gap_ms": 30}, "packets held"),
    ("latency", {"delay_ms": 100, "peers": "etcd1", "direction": "both"}, "packets held"),
])
async def test_the_same_mechanism_duplicates_reorders_and_delays_toward_one_peer(etcd, kind, params, shows):
    """Through the activities' own inject/undo (as the guard calls them): each kind proves it took effect by what
    its delayer did, and leaves nothing."""
    tag = uuid.uuid4().hex[:8]
    TAGS.append(tag)
    if "peers" in params:
        # Raft followers talk to the leader only: toward a peer that is another follower, nothing may flow to delay
        # (CI31 saw none held). The peer is the leader, or any follower when etcd2 leads.
        leader = (await etcd.wait_healthy()).roles["leader"]
        params = {**params, "peers": leader if leader != "etcd2" else "etcd1"}
    req = FaultRequest(subject=etcd.ref, fault=kind, target="etcd2", targets=["etcd2"], params=params, tag=tag)
    try:
        inject_now(req)
        with httpx.Client() as http:  # traffic through etcd2, beside etcd's own between members
            for i in range(30):
                http.post(f"{member_url(etcd, 'etcd2')}/v3/kv/put", json={"key": "eA==", "value": "eQ=="}, timeout=10)
        time.sleep(1.2)  # the delayer reports once a second
        effect = effect_now(req)
        assert effect.took_effect and shows in effect.evidence[0], effect
        rules = queue_rules(etcd, "etcd2")
        if kind == "latency":  # only toward the peer's addresses, both ways
            peer = " ".join(rules)
            assert "-d " in peer and "-s " in peer and len([r for r in rules if "NFQUEUE" in r]) == 2, rules
    finally:
        restore_now(req)
    assert queue_rules(etcd, "etcd2") == [] and delayers(tag) == []


@pytest.mark.parametrize("param, says", [
    ("delay_ms=-5", "delay_ms=-5 is invalid"),
    ("percent=150", "percent=150 is invalid"),
    ("peers=nosuch", "peers nosuch not a member"),
])
def test_bad_latency_input_exits_2_with_one_line_and_injects_nothing(client, etcd, tmp_path, param, says):
    env = command_env(client.service_client.config.target_host, tmp_path)
    before = {s: queue_rules(etcd, s) for s in etcd.instance.subject.targets}
    proc = run_command([sys.executable, "starter.py", "chaos", "--fault", "latency", "-p", param, "--countdown", "0",
                        *subject_args(etcd)], env, timeout=180)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert {s: queue_rules(etcd, s) for s in etcd.instance.subject.targets} == before


def test_a_delayer_that_cannot_start_leaves_no_helper_behind(etcd, monkeypatch):
    """Without NET_RAW the duplicating delayer cannot open its raw socket and exits: the inject fails (and would be
    retried), and the dead helper is removed with it rather than left for nobody."""
    from durable_chaos.faults.delay import Duplicate
    monkeypatch.setattr(Duplicate, "capabilities", ("NET_ADMIN",))
    tag = uuid.uuid4().hex[:8]
    TAGS.append(tag)
    req = FaultRequest(subject=etcd.ref, fault="duplicate", target="etcd1", targets=["etcd1"], params={}, tag=tag)
    with pytest.raises(RuntimeError, match="the delayer for etcd1 exited: .*Operation not permitted"):
        inject_now(req)
    assert delayers(tag) == [] and queue_rules(etcd, "etcd1") == []


async def test_zz_nothing_is_left_behind_by_this_module(etcd):
    assert TAGS, "no test recorded its tag: the tests above did not run"
    assert await leftovers(etcd, TAGS) == []
    assert (await etcd.wait_healthy()).ok

