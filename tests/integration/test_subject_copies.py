"""The tests' own record of what happened to a copy (durable_chaos/runtime/copies.py): many tests assert that a run
killed exactly its target, and read the kill from that record."""

from __future__ import annotations

from datetime import datetime, timezone

from durable_chaos.docker_engine import PROJECT_LABEL, SERVICE_LABEL, connect

# More than the 256 events Docker keeps for `docker events --since` (its whole engine's, of every kind).
EXECS = 100  # three events each: exec_create, exec_start, exec_die


async def test_a_kill_stays_in_the_record_however_many_events_follow_it(etcd):
    since = datetime.now(timezone.utc)
    async with connect() as docker:
        found = await docker.containers.list(filters={"label": [f"{PROJECT_LABEL}={etcd.instance.project}"]})
        member = {c["Labels"][SERVICE_LABEL]: c for c in found}
        await member["etcd3"].kill()
        try:
            # A run on a subject whose checks exec into its members makes as many events (CI, session 28).
            for _ in range(EXECS):
                await (await member["etcd1"].exec(["true"])).start(detach=True)
            assert await etcd.died_since(since) == ["etcd3"]
        finally:
            await member["etcd3"].start()
    assert (await etcd.wait_healthy(60)).ok
