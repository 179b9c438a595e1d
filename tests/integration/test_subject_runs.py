"""A full chaos run through `starter.py chaos` on every shipped subject and on a user's subject folder.

Each runs on a private copy. What happened is checked against Docker's own event log (exactly one container died,
the reported target), and the end state against the system's own API (the subject's session, not the report).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from tests.conftest import ROOT, command_env, healthy, private_copy, starter, subject_args, until

EXAMPLE = ROOT / "tests" / "data" / "my-subject"

SUBJECTS = {
    # subject (name or folder): (port range of its copies, role the system must report after the run)
    "nats": ((25000, 25490), "stream_leader"),
    "postgres": ((25500, 25990), "leader"),
    str(EXAMPLE): ((26000, 26490), "primary"),
}


@pytest.mark.parametrize("subject", list(SUBJECTS), ids=["nats", "postgres", "folder-redis"])
async def test_a_chaos_run_hits_exactly_the_reported_target_and_leaves_the_system_healthy(client, tmp_path, subject):
    port_range, role = SUBJECTS[subject]
    async with private_copy(subject, port_range) as copy:
        targets = copy.instance.subject.targets
        since = datetime.now(timezone.utc)
        env = command_env(client.service_client.config.target_host, tmp_path)
        proc = await asyncio.to_thread(starter, "chaos", "--subject", subject, "--json", "--countdown", "1",
                                       *subject_args(copy), env=env, timeout=400)
        assert proc.returncode in (0, 1), proc.stderr
        report = json.loads(proc.stdout)
        # Redis may lose writes when its primary fails over or restarts: the folder's run may fail (exit 1) for
        # that alone (test_folder_safety.py checks that verdict).
        failed_for = [r for r in report["reasons"] if r.startswith("data safety violated")]
        passed = not (failed_for and subject == str(EXAMPLE))
        assert report["verdict"] == ("pass" if passed else "fail"), report["reasons"]
        assert proc.returncode == (0 if passed else 1)
        assert report["subject"] == copy.instance.subject.name and report["target"] in targets
        assert (await copy.died_since(since)) == [report["target"]]
        assert report["diagnosis"]["correct"] is True, report["diagnosis"]
        assert report["load"]["baseline_ops_s"] > 0
        # No acknowledged write lost; the folder subject's load declares reads, writes and compare-and-sets, so
        # its data safety is decided too.
        safety = report["safety"]
        if subject == str(EXAMPLE):
            assert safety["model"] == "cas-register" and safety["verdict"] in ("ok", "violated"), safety["reasons"]
            assert safety["ops"] > 0 and safety["availability"]["before"]["ops"] > 0
        else:
            assert safety["verdict"] == "ok", safety["reasons"]
            assert safety["acked_writes"] > 0 and safety["lost_writes"] == 0
        assert report["time_to_detect_s"] > 0 and report["time_to_restore_s"] > 0
        assert all((await copy.running()).values()), (await copy.running())
        if subject == str(EXAMPLE):
            # Redis's Sentinels rediscover a restarted peer some time after the run saw every invariant hold: the
            # example's steady state (every Sentinel sees all three) comes back soon, not at once.
            await until(30, lambda: healthy(copy))
        final = await copy.check(timeout=2.0)  # the system's own answers
        assert final.ok, final.violations
        assert final.roles.get(role) in targets, final.roles
