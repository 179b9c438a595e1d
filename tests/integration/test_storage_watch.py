"""The storage faults' undo watches members it started until their subject finds them healthy, on real containers.

A member may refuse its disk only when it hears from its peers (etcd started on a WAL that lost records panics at
its leader's first heartbeat: "tocommit(268) is out of range [lastIndex(30)]"), or hang on what it read without
exiting. The watch of session 19 ended 3 s after the member's start and knew only exits: in two CI runs etcd2, on
its damaged WAL, answered no health check for 90 s and was never repaired. These members are containers that do
what such a member does, with a `healthy` that answers as its subject's check would.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from python_on_whales import docker

from durable_chaos.faults.base import Target
from durable_chaos.faults.netns import nettools_image
from durable_chaos.faults.storage import start_and_watch

LABEL = "durable-chaos.test-storage-watch"


@pytest.fixture
def member(tmp_path):
    """Make members (containers running `script`, their data folder /data bound to a folder of their own under
    tmp_path), created but not started, as a member the fault left down; every one is removed at the end."""
    made = []
    run_id = uuid.uuid4().hex[:8]

    def make(service: str, script: str) -> Target:
        data = tmp_path / service
        data.mkdir()
        c = docker.container.create(nettools_image().ref, ["sh", "-c", script], name=f"t-watch-{run_id}-{service}",
                                    labels={LABEL: run_id}, volumes=[(str(data), "/data")])
        made.append(c)
        return Target(service=service, container=c, addresses={}, tag=f"t-{run_id}", data_path="/data")

    yield make
    for c in made:
        docker.container.remove(c, force=True)


def damaged_wal(tmp_path) -> dict[str, tuple]:
    """m1's damaged file, and the copy the fault saved of it before: `saved` as the undo is given it."""
    original = tmp_path / "m1" / "wal"
    original.write_bytes(b"damaged")
    copy = tmp_path / "saved-wal"
    copy.write_bytes(b"as it was")
    return {"m1": (copy, original)}


def test_a_member_that_exits_after_a_few_seconds_before_it_was_healthy_is_repaired(member, tmp_path):
    t = member("m1", "sleep 5; echo 'panic: tocommit(268) is out of range [lastIndex(30)]'; exit 2")
    saved = damaged_wal(tmp_path)
    began = time.monotonic()
    done = start_and_watch([t], healthy=lambda: set(), saved=saved)
    took = time.monotonic() - began
    assert done["m1"] is not None and done["m1"].startswith(
        "m1 could not start on what its disk held (exit code 2: panic: tocommit(268) is out of range"), done
    assert "repaired by putting back the saved copy of wal" in done["m1"], done
    assert saved["m1"][1].read_bytes() == b"as it was"
    assert took >= 5, took  # it was watched until it died, not given up on after a few seconds
    t.container.reload()
    assert t.container.state.running  # started again after the repair


def test_members_come_back_together_and_one_that_turns_healthy_is_left_running_as_it_was(member, tmp_path):
    # Two members of a rack that lost power: each is healthy only once both run (a quorum), so the watch must
    # start both before it waits on either; neither exits, so nothing is repaired or put back.
    rack = [member(s, "sleep 600") for s in ("m1", "m2")]
    (tmp_path / "m1" / "wal").write_bytes(b"kept")

    def healthy() -> set[str]:
        for t in rack:
            t.container.reload()
        return {t.service for t in rack} if all(t.container.state.running for t in rack) else set()

    began = time.monotonic()
    done = start_and_watch(rack, healthy, saved={"m1": (tmp_path / "saved-wal", tmp_path / "m1" / "wal")})
    assert done == {"m1": None, "m2": None}
    assert time.monotonic() - began < 10  # not the whole watch: healthy as soon as both ran
    assert (tmp_path / "m1" / "wal").read_bytes() == b"kept"
    for t in rack:
        t.container.reload()
        assert t.container.state.running


def test_a_member_up_but_never_healthy_while_its_peers_are_is_repaired(member, tmp_path):
    # A member that hangs on what it read (its container up, its program never answering), in a cluster whose
    # other members are healthy: it cannot start on its disk as surely as one that exits.
    hung = member("m1", "echo 'level=error msg=\"cannot read the log\"'; sleep 600")
    saved = damaged_wal(tmp_path)
    began = datetime.now(timezone.utc)
    done = start_and_watch([hung], healthy=lambda: {"m2", "m3"}, saved=saved, watch_s=2)
    assert done["m1"] is not None and done["m1"].startswith(
        "m1 could not start on what its disk held (up, and not healthy 2s after it was started"), done
    assert "repaired by putting back the saved copy of wal" in done["m1"], done
    assert saved["m1"][1].read_bytes() == b"as it was"
    hung.container.reload()
    # Stopped, repaired, started again: its last start came after the watch.
    assert hung.container.state.running and hung.container.state.started_at > began + timedelta(seconds=2)


def test_members_that_are_up_while_nobody_is_healthy_are_left_to_the_health_check(member, tmp_path):
    # The whole cluster down (no quorum, say): that is not one member's disk, and nothing is repaired or put back.
    rack = [member(s, "sleep 600") for s in ("m1", "m2")]
    original = tmp_path / "m1" / "wal"
    original.write_bytes(b"what it kept")
    copy = tmp_path / "saved-wal"
    copy.write_bytes(b"older")
    began = datetime.now(timezone.utc)
    done = start_and_watch(rack, healthy=lambda: set(), saved={"m1": (copy, original)}, watch_s=2)
    assert done == {"m1": None, "m2": None}
    assert original.read_bytes() == b"what it kept"
    for t in rack:
        t.container.reload()
        assert t.container.state.running and t.container.state.started_at < began + timedelta(seconds=1)
