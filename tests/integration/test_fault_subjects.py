"""A non-kill fault on every other shipped subject, through `starter.py chaos` on a private copy: partition on NATS,
stop on PostgreSQL/Patroni (not pause: Patroni 3.0.2 can lose acknowledged writes after a paused leader resumes,
patroni#2689).

What happened is read from Docker (its event log, the member's namespace by a helper of ours) and the end state from
the system's own API, not from the report.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from durable_chaos.contracts import ChaosReport
from durable_chaos.ids import fault_tag
from tests.conftest import command_env, private_copy, starter, subject_args
from tests.fault_checks import events_since, host_chaos_rules, leftovers, net_states
from tests.integration.test_fault_kinds import record, row, since_now

# subject: (port range of its copy, the run's fault options, its role read after the run)
CASES = {
    "nats-partition": ("nats", (34000, 34990), ["--fault", "partition", "--target", "leader"], "stream_leader"),
    "postgres-stop": ("postgres", (35000, 35990), ["--fault", "stop", "-p", "grace_s=5", "--target", "leader"],
                      "leader"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_non_kill_fault_hits_the_leader_and_leaves_the_system_healthy(client, tmp_path, case):
    subject, port_range, fault_args, role = CASES[case]
    async with private_copy(subject, port_range) as copy:
        leader = (await copy.wait_healthy()).roles[role]
        before = await net_states(copy)
        since = since_now()
        env = command_env(client.service_client.config.target_host, tmp_path,
                          CHAOS_TASK_QUEUE=f"t-{uuid.uuid4().hex[:10]}")
        proc = await asyncio.to_thread(starter, "chaos", "--subject", subject, "--json", "--countdown", "1",
                                       *fault_args, *subject_args(copy), env=env, timeout=400)
        assert proc.returncode == 0, proc.stderr
        report = ChaosReport.model_validate_json(proc.stdout)
        tag = fault_tag(report.workflow_id, report.run_id)
        assert report.verdict == "pass", report.reasons
        assert report.targets == [leader], (report.targets, leader)
        assert report.fault == fault_args[1] and report.fault_state == "restored"
        events = [(s, a) for s, a, _ in (await events_since(copy, since))]
        if report.fault == "stop":
            assert (await copy.died_since(since)) == [leader]
            assert {s for s, _ in events} == {leader} and (leader, "start") in events, events
        else:
            assert events == [], events  # a partition stops, pauses and restarts nobody
            assert (await net_states(copy)) == before  # every namespace reads exactly as before the run
        assert (await leftovers(copy, [tag])) == []
        assert (await host_chaos_rules()) == []
        assert all((await copy.running()).values()), (await copy.running())
        final = await copy.wait_healthy(timeout=60)  # the system's own answers
        assert final.ok, final.violations
        assert final.roles.get(role) in copy.instance.subject.targets, final.roles
        record(row(report, f"{subject} {report.fault_label} --target leader"))
