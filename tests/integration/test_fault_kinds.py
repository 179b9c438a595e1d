"""Every fault kind end to end on a real 3-member etcd cluster, seen from outside while it is in effect and gone after.

The runs are interactive and held at the detect gate, so the fault can be looked at in place: Docker's own state and
event log for stop and pause, the member's network namespace (read by a helper container of our own, not by the
product's code) for partition, loss and bandwidth. Afterwards the namespace must read exactly as before the run,
nothing may be stopped or paused, and every member must be healthy by etcd's own answers. Bad input goes through
`python starter.py chaos` as a user types it: exit 2, one line, nothing touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from python_on_whales import docker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment

from activities.faults import confirm_fault, inject_fault, restore_fault
from durable_chaos.contracts import (
    ChaosInput,
    ChaosReport,
    FaultRequest,
    FaultState,
    PreflightResult,
    Progress,
    final_report,
)
from durable_chaos.ids import fault_tag
from durable_chaos.runtime.copies import container_events_recorded
from tests.conftest import (
    ARTIFACTS,
    ROOT,
    command_env,
    running_worker,
    starter,
    subject_args,
    walk_to_end,
    walk_to_gate,
)
from tests.fault_checks import (
    HELPER_LABEL,
    containers,
    docker_state,
    events_since,
    host_chaos_rules,
    leftovers,
    net_states,
    qdisc_handle,
)
from workflows.chaos import ChaosDemoWorkflow

PORT_RANGE = (32000, 32990)
NO_ROLES = ROOT / "tests" / "data" / "no-roles"
TAGS: list[str] = []  # every fault tag this module's runs used: the clean-up test looks for anything of theirs


def record(row: dict) -> None:
    """Each run's figures (TTD/TTR per kind, for the notes); printed with -s too."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "fault_kinds.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(row)


def row(report: ChaosReport, scenario: str) -> dict:
    return {"scenario": scenario, "subject": report.subject, "fault": report.fault_label, "targets": report.targets,
            "verdict": report.verdict, "ttd_s": report.time_to_detect_s, "ttr_s": report.time_to_restore_s,
            "diagnosis_named": report.diagnosis.affected_nodes if report.diagnosis else None}


def since_now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def held_run(client: Client, task_queue: str, etcd, **kw):
    """An interactive run on `etcd` holding before detect: its fault is in place and stays until we walk on. A test
    that fails while it holds aborts it (the run restores), so one failure does not leave the shared copy broken."""
    inp = ChaosInput(subject=etcd.ref, countdown_s=0, interactive=True, **kw)
    handle = await client.start_workflow(ChaosDemoWorkflow.run, inp, id=etcd.instance.project, task_queue=task_queue,
                                         search_attributes=inp.start_attributes())
    try:
        await asyncio.wait_for(walk_to_gate(handle, "detect"), 120)
        TAGS.append(fault_tag(handle.id, handle.result_run_id))
        yield handle
    finally:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handle.execute_update(ChaosDemoWorkflow.abort, "test failed"), 120)


async def addresses(etcd) -> dict[str, list[str]]:
    """service -> its IPs on the subject's networks, as Docker reports them."""
    return {svc: sorted(n.ip_address for n in (c.network_settings.networks or {}).values() if n.ip_address)
            for svc, c in (await containers(etcd)).items()}


def drop_rules(chain: str, ips: list[str]) -> list[str]:
    return sorted(f"-A {chain} {way} {ip}/32 -j DROP" for ip in ips for way in ("-s", "-d"))


def hooks(chain: str) -> list[str]:
    return [f"-A INPUT ! -i lo -j {chain}", f"-A OUTPUT ! -o lo -j {chain}"]


async def member_says(etcd, service: str) -> str:
    """What the host gets from the member's own /health through its published port (the documented choice: a
    partition cuts the member from its peers, not from the host)."""
    port = etcd.instance.port_base + etcd.instance.subject.services.index(service) + 1
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}/health", timeout=5)
        return r.text


async def unhealthy_by_its_own_answer(etcd, service: str) -> bool:
    check = await etcd.check(timeout=2.0)
    return any(m.service == service and not m.healthy for m in check.members)


# -- every kind end to end ------------------------------------------------------------------------------------------

# case: (kind, parameters, --target, detect timeout, label, must be detected)
CASES = {
    "stop": ("stop", {"grace_s": 2}, "etcd1", 15, "stop (grace 2s)", True),
    "pause": ("pause", {}, "etcd2", 15, "pause", True),
    "partition": ("partition", {}, "etcd3", 15, "partition", True),
    "partition-groups": ("partition", {"groups": "etcd1|etcd2,etcd3"}, None, 15, "partition etcd1 | etcd2,etcd3",
                         True),
    "loss": ("loss", {"percent": 30}, "etcd2", 3, "loss 30%", False),
    "bandwidth": ("bandwidth", {"rate": "1mbit"}, "etcd3", 3, "bandwidth 1mbit", False),
}
NETWORK = ("partition", "loss", "bandwidth")


async def seen_in_effect(handle, etcd, kind: str, target: str | None, label: str, before, ips, since) -> list[str]:
    """Check the held run's fault from outside while it is in effect; returns who it hit."""
    tag = TAGS[-1]
    chain = f"CHAOS-{tag}"
    progress = await handle.query(ChaosDemoWorkflow.progress, result_type=Progress)
    hit = progress.targets
    (victim,) = hit
    others = [m for m in etcd.instance.subject.services if m != victim]
    if target:
        assert hit == [target]
    elif kind == "partition":  # the rules go on the smaller group
        assert hit == ["etcd1"]
    assert progress.fault_label == label

    state = await docker_state(etcd)
    during = (await net_states(etcd)) if kind in NETWORK else {}
    if kind == "stop":
        assert state[victim] == (False, False), state
        signals = [a.get("signal") for svc, _, a in (await events_since(etcd, since, ("kill",))) if svc == victim]
        assert signals[:1] == ["15"], signals  # SIGTERM first (a SIGKILL may follow only after the grace)
    elif kind == "pause":
        assert state[victim] == (True, True), state  # a paused member still reads as running
        assert [(s, a) for s, a, _ in (await events_since(etcd, since))] == [(victim, "pause")]
    else:
        assert state[victim] == (True, False), state
    assert all(state[m] == (True, False) for m in others), state
    if kind in ("partition", "loss"):
        ns = during[victim]
        assert ns.chains() == [chain], ns.filter
        assert sorted(ns.hooks(chain)) == hooks(chain), ns.filter
        if kind == "partition":
            peers = sorted(ip for m in others for ip in ips[m])
            assert sorted(ns.rules_of(chain)) == drop_rules(chain, peers), ns.filter
            # The member really lost its peers (etcd's own answer), and the host still reaches it.
            await asyncio.wait_for(_until(lambda: unhealthy_by_its_own_answer(etcd, victim)), 20)
            assert "health" in await member_says(etcd, victim)
        else:
            (rule,) = ns.rules_of(chain)
            drop = re.fullmatch(rf"-A {chain} -m statistic --mode random --probability ([0-9.]+) -j DROP", rule)
            assert drop and abs(float(drop[1]) - 0.30) < 1e-6, rule
        assert ns.qdiscs == before[victim].qdiscs
    if kind == "bandwidth":
        ns = during[victim]
        assert re.search(rf"qdisc tbf {qdisc_handle(tag)}: dev eth0 root .*rate 1Mbit", ns.qdiscs), ns.qdiscs
        assert not [ln for ln in ns.qdiscs.splitlines() if "dev lo " in ln and "tbf" in ln], ns.qdiscs
        assert ns.filter == before[victim].filter
    for m in during:
        assert during[m].nat == before[m].nat, f"{m}: the nat table (Docker's DNS) was touched"
        if m != victim:
            assert during[m] == before[m], f"{m} was not a target but its namespace changed"
    assert (await host_chaos_rules()) == []
    return hit


@pytest.mark.parametrize("case", list(CASES))
async def test_each_kind_is_seen_while_in_effect_and_gone_after(client, task_queue, etcd, case):
    kind, params, target, detect_timeout, label, must_detect = CASES[case]
    assert (await etcd.wait_healthy()).ok
    before = await net_states(etcd)
    ips = await addresses(etcd)
    since = since_now()
    # Helpers carry no label of the copy: their creates are recorded from the engine's stream, by the helper label.
    async with container_events_recorded(HELPER_LABEL) as helper_events, running_worker(client, task_queue), \
            held_run(client, task_queue, etcd, fault=kind, fault_params=params, target=target,
                     detect_timeout_s=detect_timeout) as handle:
        hit = await seen_in_effect(handle, etcd, kind, target, label, before, ips, since)
        await asyncio.wait_for(walk_to_end(handle), 180)
        report = await final_report(handle)
    (victim,), tag = hit, TAGS[-1]

    # -- gone afterwards, every member healthy ----------------------------------------------------------------------
    assert report.fault == kind and report.fault_label == label
    assert report.targets == hit and report.target == victim
    assert report.fault_state == FaultState.RESTORED, report.reasons
    assert report.final_check is not None and report.final_check.ok, report.reasons
    if must_detect:
        assert report.verdict == "pass", report.reasons
    assert (await leftovers(etcd, [tag])) == []
    after = await net_states(etcd)
    if kind != "stop":  # a started container has a new namespace; Docker's own rules in it may differ in detail
        assert after == before, "the namespaces do not read as before the run"
    if kind in NETWORK:
        helpers = [e.attributes for e in helper_events
                   if e.action == "create" and e.attributes.get(HELPER_LABEL) == tag]
        assert len(helpers) >= 2, helpers  # inject and undo ran in helpers carrying the run's tag
        assert all(h["image"] == "chaos-nettools:bookworm" for h in helpers), helpers
    hit_events = [(s, a) for s, a, _ in (await events_since(etcd, since))]
    assert all(s == victim for s, _ in hit_events), hit_events  # nobody else was touched
    if kind == "stop":
        assert (await etcd.died_since(since)) == [victim] and (victim, "start") in hit_events
    elif kind == "pause":
        assert hit_events == [(victim, "pause"), (victim, "unpause")], hit_events
    else:
        assert hit_events == [], hit_events
    final = await etcd.wait_healthy()
    assert final.ok and all((await etcd.running()).values()), final.violations
    record(row(report, f"etcd {case}"))


async def _until(probe, interval: float = 0.2):
    while not await probe():
        await asyncio.sleep(interval)


@pytest.mark.parametrize("kind", ["kill", "stop", "pause"])
async def test_container_kinds_act_through_the_engine_api_without_a_docker_process(etcd, kind, caplog):
    # At 20 copies on 2 cores, a `docker` process per inspect and per kill/start came close to the worker's own CPU:
    # these kinds read and act over the Engine API's socket. python-on-whales logs every command it spawns.
    caplog.set_level(logging.DEBUG, logger="python_on_whales")
    assert (await etcd.wait_healthy()).ok
    since = since_now()
    req = FaultRequest(subject=etcd.ref, fault=kind, target="etcd3", tag=fault_tag(f"engine-{kind}", "run"),
                       params={"grace_s": 1} if kind == "stop" else {})
    env = ActivityEnvironment()
    injected = await env.run(inject_fault, req)
    effect = await env.run(confirm_fault, req)
    restored = await env.run(restore_fault, req)
    spawned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Running command")]
    assert spawned == [], spawned
    assert not injected.already_down and effect.took_effect, effect
    assert not restored.already_up
    actions = [a for s, a, _ in (await events_since(etcd, since)) if s == "etcd3"]
    assert {"kill": "kill", "stop": "stop", "pause": "pause"}[kind] in actions, actions
    assert ("unpause" if kind == "pause" else "start") in actions, actions
    assert (await etcd.wait_healthy()).ok and all((await etcd.running()).values())


async def test_count_two_with_allow_quorum_loss_hits_both_and_restores_both(client, task_queue, etcd):
    assert (await etcd.wait_healthy()).ok
    since = since_now()
    async with running_worker(client, task_queue), held_run(client, task_queue, etcd, fault="pause", count=2,
                                                            allow_quorum_loss=True, detect_timeout_s=10) as handle:
        hit = (await handle.query(ChaosDemoWorkflow.progress, result_type=Progress)).targets
        state = await docker_state(etcd)
        await asyncio.wait_for(walk_to_end(handle), 180)
        report = await final_report(handle)
    assert len(set(hit)) == 2, hit
    assert sorted(s for s, (_, paused) in state.items() if paused) == sorted(hit), state
    assert report.targets == hit and report.fault_state == FaultState.RESTORED
    assert report.verdict == "pass", report.reasons  # two of three frozen: no quorum, seen at once
    assert sorted(s for s, _, _ in (await events_since(etcd, since, ("pause",)))) == sorted(hit)
    assert (await leftovers(etcd, TAGS)) == []
    assert (await etcd.wait_healthy()).ok
    record(row(report, "etcd pause --count 2 --allow-quorum-loss"))


# -- target by role -------------------------------------------------------------------------------------------------

async def activity_input(client: Client, workflow_id: str, run_id: str, name: str, input_type):
    """The input of the first `name` activity the run scheduled, decoded from its history."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        attrs = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes") and attrs.activity_type.name == name:
            (arg,) = await client.data_converter.decode(attrs.input.payloads, [input_type])
            return arg
    raise AssertionError(f"no {name} in the history")


async def activity_result(client: Client, workflow_id: str, run_id: str, name: str, result_type):
    """The result of the first completed `name` activity of the run, decoded from its history."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    scheduled = {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.HasField("activity_task_completed_event_attributes"):
            attrs = event.activity_task_completed_event_attributes
            if scheduled.get(attrs.scheduled_event_id) == name:
                (result,) = await client.data_converter.decode(attrs.result.payloads, [result_type])
                return result
    raise AssertionError(f"no completed {name} in the history")


async def test_target_leader_hits_the_member_that_led_at_preflight(client, etcd, tmp_path):
    leader = (await etcd.wait_healthy()).roles["leader"]
    since = since_now()
    env = command_env(client.service_client.config.target_host, tmp_path, CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")
    proc = await asyncio.to_thread(starter, "chaos", "--fault", "partition", "--target", "leader", "--json",
                                   "--countdown", "0", "--detect-timeout", "15", *subject_args(etcd), env=env,
                                   timeout=240)
    assert proc.returncode == 0, proc.stderr
    report = ChaosReport.model_validate_json(proc.stdout)
    TAGS.append(fault_tag(report.workflow_id, report.run_id))
    pre = await activity_result(client, report.workflow_id, report.run_id, "preflight", PreflightResult)
    inject = await activity_input(client, report.workflow_id, report.run_id, "inject_fault", FaultRequest)
    assert pre.baseline.roles["leader"] == leader  # nothing moved the leadership between our read and preflight
    assert pre.choice.must == [leader]
    assert inject.targets == [leader] and inject.tag == TAGS[-1]  # what was really asked of Docker
    assert report.targets == [leader] and report.target == leader
    assert report.verdict == "pass", report.reasons  # a partitioned leader loses its leadership: seen
    assert (await events_since(etcd, since)) == []  # a partition stops and starts nobody
    assert (await leftovers(etcd, TAGS)) == []
    assert (await etcd.wait_healthy()).ok
    record(row(report, "etcd partition --target leader"))


# -- bad input: exit 2, one line, nothing touched ---------------------------------------------------------------------

BAD = {
    "loss-150": (["--fault", "loss", "-p", "percent=150"], "fault loss: percent=150"),
    "unknown-kind": (["--fault", "flood"], "unknown fault 'flood'"),
    "count-above-members": (["--fault", "pause", "--count", "4"], "--count 4 is more than the 3 member(s)"),
    "count-2-no-quorum": (["--fault", "pause", "--count", "2"], "loses its quorum"),
    "bad-rate": (["--fault", "bandwidth", "-p", "rate=fast"], "rate=fast is invalid"),
    "bad-groups": (["--fault", "partition", "-p", "groups=etcd1|etcd9"], "etcd9 not a member"),
}


@pytest.fixture
def cli_env(client, tmp_path) -> dict[str, str]:
    # A queue of its own: a run that got through would be served by a worker in the starter's own process.
    return command_env(client.service_client.config.target_host, tmp_path,
                       CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_fault_input_exits_2_with_one_line_and_touches_nothing(cli_env, etcd, case):
    args, message = BAD[case]
    before = await net_states(etcd)
    since = since_now()
    proc = await asyncio.to_thread(starter, "chaos", *args, "--countdown", "0", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert (await events_since(etcd, since)) == []
    assert (await net_states(etcd)) == before


async def test_leader_on_a_subject_without_roles_exits_2_with_one_line(cli_env):
    project = f"t-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.to_thread(starter, "chaos", "--subject", str(NO_ROLES), "--target", "leader",
                                   "--fault", "pause", "--project", project, env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --target leader: subject plain has no roles (no leader to find); name a member or use random"
    ], proc.stderr
    # Nothing was brought up, let alone hit.
    assert containers_of_project(project) == []


def containers_of_project(project: str) -> list[str]:
    return [c.name for c in docker.container.list(all=True, filters=[("label", f"com.docker.compose.project={project}")])]


# -- the fault deadline undoes a network kind too --------------------------------------------------------------------

async def test_a_bandwidth_cap_never_outlives_its_deadline(client, task_queue, etcd):
    """Held at the detect gate (nobody presses on), the cap is ended by the fault deadline and undone."""
    assert (await etcd.wait_healthy()).ok
    before = await net_states(etcd)
    async with running_worker(client, task_queue), held_run(client, task_queue, etcd, fault="bandwidth",
                                                            fault_params={"rate": "512kbit"}, target="etcd1",
                                                            max_fault_s=6) as handle:
        qdiscs = (await net_states(etcd, ["etcd1"]))["etcd1"].qdiscs
        assert f"qdisc tbf {qdisc_handle(TAGS[-1])}: dev eth0 root" in qdiscs
        report = await asyncio.wait_for(final_report(handle), 90)  # no `advance`: only the deadline moves it on
    assert report.fault_label == "bandwidth 512kbit" and report.fault_state == FaultState.RESTORED
    assert "fault deadline (6s) reached before detection: restoring now" in report.reasons, report.reasons
    assert (await leftovers(etcd, TAGS)) == []
    assert (await net_states(etcd)) == before
    assert (await etcd.wait_healthy()).ok


async def test_a_partition_whose_member_was_stopped_meanwhile_is_restored_without_an_error(etcd, capfd):
    # The member's rules live in its network namespace, which dies when it stops: the undo finds no namespace to
    # enter, and that means nothing is left to undo. The helper's "cannot join network of a non running container"
    # used to reach the worker's stderr uncaptured, so it was never recognised, and the restore failed (and was
    # retried for as long as the member stayed down).
    assert (await etcd.wait_healthy()).ok
    tag = fault_tag(f"partition-stopped-{uuid.uuid4().hex[:6]}", "run")
    TAGS.append(tag)
    req = FaultRequest(subject=etcd.ref, fault="partition", target="etcd3", tag=tag)
    env = ActivityEnvironment()
    assert not (await env.run(inject_fault, req)).already_down
    member = await asyncio.to_thread(docker.container.inspect, f"{etcd.instance.project}-etcd3-1")
    await asyncio.to_thread(member.stop, time=1)  # an operator, or its orchestrator
    try:
        restored = await env.run(restore_fault, req)
        assert restored.already_up  # its rules went with its namespace: there was nothing to undo
    finally:
        await asyncio.to_thread(member.start)
    assert "cannot join network" not in capfd.readouterr().err
    assert (await etcd.wait_healthy()).ok


# -- the law: nothing left behind ------------------------------------------------------------------------------------

async def test_zz_nothing_is_left_behind_by_this_module(etcd):
    """Runs last in the module: no chain, qdisc, helper, paused or stopped member is left by any run above."""
    assert TAGS, "no run recorded its tag: the tests above did not run"
    assert (await leftovers(etcd, TAGS)) == []
    assert (await host_chaos_rules()) == []  # the host's own namespace was never touched
    assert (await etcd.wait_healthy()).ok
