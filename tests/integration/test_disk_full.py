"""disk-full on a member with a bounded data volume: a loop-backed ext4 file that this test makes, given to one
Redis member of a subject folder the test writes (`data: {plain1: /data}`), so the host's disk is never at risk.

The volume keeps its data across `docker kill` + `docker start` (Docker unmounts a local volume when no container
uses it; an ext4 file keeps what was written, where a tmpfs volume would lose it), `compose down -v` removes it,
and the test detaches the loop device: nothing is left mounted or attached. The effect is read from outside the
product: `df` in the member, and the member's own answer (Redis refuses writes: MISCONF ... No space left on
device) and log. Undo deletes the ballast; the member writes again.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from python_on_whales import docker

from activities.faults import member_targets
from durable_chaos.faults import make_fault
from tests.conftest import private_copy, starter, subject_args
from tests.fault_checks import container_ids
from tests.integration import test_disk_faults as disk_faults
from tests.integration import test_fault_kinds as fault_kinds
from tests.integration.test_disk_faults import held_then_ended

PORT_RANGE = (43000, 43990)
cli_env = disk_faults.cli_env  # the CLI's environment with a task queue of its own (a fixture)
VOLUME_MB = 48

SUBJECT = """name: bounded
services: [plain1, plain2]
ports: {base: 43400, names: [client]}
images:
  - ref: my-redis:7
    env: REDIS_IMAGE
    build: {kind: debian, packages: [redis-server, redis-sentinel]}
probes:
  - {name: ping, kind: tcp, send: "PING\\r\\n", expect: {output: "\\\\+PONG"}}
load:
  - {name: ping, kind: tcp, send: "PING\\r\\n", expect: {output: "\\\\+PONG"}}
data: {plain1: /data, plain2: /data}
"""

COMPOSE = """services:
  plain1:
    image: ${{REDIS_IMAGE}}
    restart: "no"
    command: [redis-server, --protected-mode, "no", --appendonly, "yes", --dir, /data]
    ports: ["127.0.0.1:${{PLAIN1_PORT}}:6379"]
    volumes: [plain1-data:/data]
  plain2:
    image: ${{REDIS_IMAGE}}
    restart: "no"
    command: [redis-server, --protected-mode, "no", --appendonly, "yes", --dir, /data]
    ports: ["127.0.0.1:${{PLAIN2_PORT}}:6379"]
    volumes: [plain2-data:/data]
volumes:
  plain1-data:
    driver_opts: {{type: ext4, device: {plain1}}}
  plain2-data:
    driver_opts: {{type: ext4, device: {plain2}}}
"""


def attached(image: Path) -> list[str]:
    """Loop devices backed by `image` (losetup -j)."""
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[0] for line in out.splitlines()]


@pytest_asyncio.fixture(scope="module")
async def bounded(tmp_path_factory):
    """A copy of the subject above whose members' data volumes are ext4 files of VOLUME_MB on loop devices (a
    preflight asks the fault about every member a run may hit: each needs a bounded volume)."""
    folder = tmp_path_factory.mktemp("bounded")
    images = {s: folder / f"{s}-{uuid.uuid4().hex[:6]}.ext4" for s in ("plain1", "plain2")}
    devices: dict[str, str] = {}
    try:
        for service, image in images.items():
            subprocess.run(["truncate", "-s", f"{VOLUME_MB}M", str(image)], check=True)
            # No blocks reserved for root: the member (root in its container) fills exactly what df calls free.
            subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
            devices[service] = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                                              text=True, check=True).stdout.strip()
        (folder / "subject.yaml").write_text(SUBJECT)
        (folder / "docker-compose.yaml").write_text(COMPOSE.format(**devices))
        async with private_copy(str(folder), PORT_RANGE) as copy:
            yield copy
    finally:
        for device in devices.values():
            subprocess.run(["losetup", "-d", device], check=False)
    # compose down -v removed the volumes (unmounted), and the loop devices are detached: nothing is left.
    assert all(attached(image) == [] for image in images.values())
    mounts = Path("/proc/mounts").read_text()
    assert not [d for d in devices.values() if d + " " in mounts]


def redis(port: int, *args: str) -> str:
    """One command in Redis's inline protocol; the first line of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        return s.recv(4096).decode(errors="replace").splitlines()[0]


def df_in_member(container_id: str) -> tuple[str, int]:
    """(use %, bytes free) of /data as `df` in the member reads it."""
    out = docker.execute(container_id, ["df", "-B1", "--output=pcent,avail", "/data"]).splitlines()[-1].split()
    return out[0], int(out[1])


def port(copy, service: str) -> int:
    return copy.instance.port_base + copy.instance.subject.port_offset(service, "client")


async def refused_with_enospc(p: int, within_s: float = 20) -> str:
    """Write until Redis refuses (its AOF write failed): its answer."""
    deadline = time.monotonic() + within_s
    while True:
        answer = await asyncio.to_thread(redis, p, "SET", f"k{time.monotonic_ns()}", "x" * 1000)
        if answer.startswith("-") or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.2)


async def test_disk_full_fills_the_bounded_volume_to_enospc_and_undo_empties_it(bounded):
    p = port(bounded, "plain1")
    member = (await container_ids(bounded))["plain1"]
    assert redis(p, "SET", "before", "kept") == "+OK"
    fault = make_fault("disk-full")
    [t] = await asyncio.to_thread(member_targets, bounded.instance, ["plain1"], "f0110001")
    assert fault.refuse([t]) is None
    used_before = df_in_member(member)
    try:
        assert fault.inject(t) is True and fault.inject(t) is False
        full = df_in_member(member)
        answer = await refused_with_enospc(p)
        evidence = fault.evidence_of_effect(t)
        signs = type(fault).member_signs(docker.container.inspect(member))
    finally:
        undone = fault.undo(t)
    assert undone is True and fault.undo(t) is False and not fault.in_effect(t)
    logs = docker.container.logs(member)
    print(f"plain1 disk-full: df {used_before} -> {full}; Redis answered {answer!r}; evidence: {evidence}")
    assert full == ("100%", 0), full
    assert answer.startswith("-MISCONF") and "No space left on device" in answer, answer
    assert "No space left on device" in logs
    assert evidence and "100% full, 0 bytes free" in evidence, evidence
    assert signs and "ballast .chaos-ballast-f0110001" in signs[0], signs
    # Undone: the ballast is gone, the volume as free as before, and the member writes again.
    assert docker.execute(member, ["ls", "-A", "/data"]).split().count(".chaos-ballast-f0110001") == 0
    assert df_in_member(member)[1] > VOLUME_MB * 2**20 // 2
    deadline = time.monotonic() + 20
    while (answer := redis(p, "SET", "after", "ok")) != "+OK":
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.5)
    assert redis(p, "GET", "before").startswith("$4")


async def test_the_bounded_volume_keeps_its_data_across_kill_and_start(bounded):
    p = port(bounded, "plain1")
    assert redis(p, "SET", "survives", "kill") == "+OK"
    docker.container.kill((await container_ids(bounded))["plain1"])
    docker.container.start((await container_ids(bounded))["plain1"])
    assert (await bounded.wait_healthy()).ok
    assert redis(p, "GET", "survives") == "$4"  # bulk string of 4 bytes: "kill"


@pytest.mark.parametrize("how", ["cancel", "terminate"])
async def test_a_cancelled_or_terminated_run_removes_the_ballast(client, task_queue, bounded, how):
    assert (await bounded.wait_healthy()).ok
    member = (await container_ids(bounded))["plain1"]
    await held_then_ended(client, task_queue, bounded, how, "plain1", lambda: df_in_member(member)[1] == 0,
                          fault="disk-full")
    assert df_in_member(member)[1] > VOLUME_MB * 2**20 // 2
    assert not [f for f in docker.execute(member, ["ls", "-A", "/data"]).split() if f.startswith(".chaos-ballast")]
    # The helpers that filled and emptied the volume are gone too (the daemon removes each when it exits).
    assert docker.container.list(all=True, filters=[("label", f"durable-chaos.helper={fault_kinds.TAGS[-1]}")]) == []


async def test_disk_full_on_etcd_exits_2_with_one_line(cli_env):
    async with private_copy("etcd", PORT_RANGE) as etcd:
        proc = await asyncio.to_thread(starter, "chaos", "--fault", "disk-full", "--target", "etcd2",
                                       "--countdown", "0", *subject_args(etcd), env=cli_env)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: disk-full: etcd2: its data (/etcd-data) is in its container's writable layer, on the "
                      "host's disk: filling it would fill the host's; nothing was injected"], proc.stderr
