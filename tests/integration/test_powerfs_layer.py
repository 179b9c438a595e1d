"""The power-loss layer (faults/powerfs) on real Docker and a real FUSE mount: a container's writes go through it, a
power loss drops exactly what nobody fsynced, a real etcd member (which fsyncs every commit) loses nothing it
acknowledged, and removing the layer leaves no helper, no mount and no folder, also after its helper died.

"Nothing left" is read from the machine itself: /proc/self/mountinfo and the engine's containers."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from python_on_whales import docker

from activities.images import ensure_images
from durable_chaos.faults.powerfs import Layer, owner_in_image, powerfs_image
from subjects.etcd import etcd_image
from tests.conftest import free_port
from tests.workers import WorkerProcess

PYTHON = powerfs_image().ref  # Debian's python3: the writer in the first test is any program


def mounts_under(folder: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(folder) in line]


def nothing_left(layer: Layer) -> None:
    assert not mounts_under(layer.folder), "a mount of the layer is left"
    assert not docker.container.exists(layer.helper), "the layer's helper is left"
    assert not layer.folder.exists(), "the layer's folder is left"


@pytest.fixture
def layer():
    ensure_images([powerfs_image(), etcd_image()])
    made = Layer(f"t-{uuid.uuid4().hex[:8]}", "member1")
    members: list[str] = []
    made.start()
    yield made, members
    for name in members:
        docker.container.remove(name, force=True)
    made.remove()
    nothing_left(made)


def test_a_power_loss_drops_exactly_the_writes_nobody_fsynced(layer):
    layer, members = layer
    name = f"{layer.tag}-writer"
    members.append(name)
    # "synced" is fsynced, "cached" only written (in the page cache, as far as the program knows: it is acknowledged),
    # "appended" is a synced file written to again without an fsync.
    script = ("import os\n"
              "def put(path, data, sync):\n"
              "    with open(path, 'ab') as f:\n"
              "        f.write(data); f.flush()\n"
              "        if sync: os.fsync(f.fileno())\n"
              "put('/data/synced', b's' * 10000, True)\n"
              "put('/data/cached', b'c' * 3000, False)\n"
              "put('/data/appended', b'a' * 5000, True)\n"
              "put('/data/appended', b'A' * 700, False)\n")
    docker.run(PYTHON, ["-c", "import time; time.sleep(600)"], entrypoint="python3", detach=True, name=name,
               volumes=[layer.volume("/data")])
    docker.execute(name, ["python3", "-c", script])
    # The program reads back what it wrote, synced or not.
    assert docker.execute(name, ["sh", "-c", "wc -c < /data/cached; wc -c < /data/appended"]).split() == ["3000", "5700"]
    assert layer.ask("stats")["bytes"] == 3700

    docker.container.kill(name)  # the power goes: the process first, then the page cache
    assert layer.ask("drop") == {"files": 2, "bytes": 3700, "pages": 2}
    assert (layer.backing / "synced").read_bytes() == b"s" * 10000
    assert (layer.backing / "cached").read_bytes() == b""  # its name was kept (metadata is applied at once)
    assert (layer.backing / "appended").read_bytes() == b"a" * 5000
    # The member comes back to what the disk held.
    docker.container.start(name)
    assert docker.execute(name, ["sh", "-c", "wc -c < /data/cached; wc -c < /data/appended"]).split() == ["0", "5000"]


def test_an_etcd_member_that_fsyncs_every_commit_keeps_every_acknowledged_write_through_a_power_loss(layer):
    layer, members = layer
    name = f"{layer.tag}-etcd"
    members.append(name)
    port = free_port()
    docker.run(etcd_image().ref, ["--name", "etcd1", "--data-dir", "/etcd-data",
                                  "--listen-client-urls", "http://0.0.0.0:2379",
                                  "--advertise-client-urls", f"http://127.0.0.1:{port}"],
               entrypoint="etcd", detach=True, name=name, publish=[(f"127.0.0.1:{port}", 2379)],
               volumes=[layer.volume("/etcd-data")])
    url = f"http://127.0.0.1:{port}/v3/kv"

    def call(path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{url}/{path}", data=json.dumps(body).encode())
        return json.loads(urllib.request.urlopen(request, timeout=2).read())

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def wait_answering() -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                call("range", {"key": b64("-")})
                return
            except OSError:
                assert time.monotonic() < deadline, docker.container.logs(name)[-2000:]
                time.sleep(0.1)

    wait_answering()
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            try:
                call("put", {"key": b64(f"k{n:06d}"), "value": b64("v" * 200)})
            except OSError:
                return  # the member is gone: this write's outcome is unknown, and it is not counted
            acknowledged.append(f"k{n:06d}")
            n += 1

    writer = threading.Thread(target=load)
    writer.start()
    time.sleep(2)
    docker.container.kill(name)  # under load
    stop.set()
    writer.join(10)
    dropped = layer.ask("drop")
    assert len(acknowledged) > 100, "the load did not run"
    docker.container.start(name)
    wait_answering()
    found = call("range", {"key": b64("k"), "range_end": b64("l"), "keys_only": True, "limit": 0})
    keys = {base64.b64decode(kv["key"]).decode() for kv in found.get("kvs", [])}
    missing = [k for k in acknowledged if k not in keys]
    assert not missing, f"{len(missing)} acknowledged writes lost by a power loss ({dropped})"
    stats = layer.ask("stats")
    assert stats["synced_bytes_total"] > 0  # its writes did go through the layer, and were fsynced there
    assert stats["dropped_bytes_total"] == dropped["bytes"]


def test_removing_a_layer_whose_helper_died_unmounts_what_it_left_behind():
    ensure_images([powerfs_image()])
    layer = Layer(f"t-{uuid.uuid4().hex[:8]}", "member1")
    try:
        layer.start()
        assert layer.mounted()
        docker.container.kill(layer.helper)
        assert mounts_under(layer.folder), "the dead helper's mount should still be there, broken"
        layer.start()  # a retried start replaces it
        assert layer.mounted() and layer.ask("stats")["files"] == 0
        docker.container.kill(layer.helper)
    finally:
        assert layer.remove()
    nothing_left(layer)
    assert not layer.remove()  # again: nothing to do


async def test_a_starting_worker_removes_the_layers_of_a_copy_taken_down_by_hand(client, task_queue, tmp_path,
                                                                                monkeypatch):
    # A copy taken down with `docker compose down` leaves its layers: helpers running, FUSE mounts, folders. The
    # next worker to start on the host removes those of projects with no container left and older than a
    # preflight takes, and leaves a young one alone (another worker's preflight may be about to create its members).
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))  # the layers below are made under the worker's state dir
    ensure_images([powerfs_image()])
    gone, young = Layer(f"t-{uuid.uuid4().hex[:8]}", "member1"), Layer(f"t-{uuid.uuid4().hex[:8]}", "member1")
    try:
        for made in (gone, young):
            made.start()
        old = time.time() - 3600
        os.utime(gone.folder.parent, (old, old))
        worker = WorkerProcess(client.service_client.config.target_host, task_queue, tmp_path).wait_ready()
        worker.stop()
        said = worker.log.read_text()
        assert f"removed the power-loss layers of subject copy {gone.tag!r}: it has no container any more" in said, said
        assert young.tag not in said
        nothing_left(gone)
        assert young.mounted() and docker.container.exists(young.helper)
    finally:
        for made in (gone, young):
            made.remove()
    nothing_left(young)


def test_the_data_folder_owner_is_read_from_any_image_even_one_without_a_command():
    # A subject's image may have neither ENTRYPOINT nor CMD (its compose file names the command): the owner of its
    # data folder is still read, from a container created and never started. Built here with `docker import` of
    # one folder owned by uid 70 (as a postgres image's data folder is), mode 0750.
    ref = f"t-nocmd-{uuid.uuid4().hex[:8]}:1"
    info = tarfile.TarInfo("var/lib/data")
    info.type, info.uid, info.gid, info.mode = tarfile.DIRTYPE, 70, 71, 0o750
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(info)
    subprocess.run(["docker", "import", "-", ref], input=buffer.getvalue(), check=True, capture_output=True)
    try:
        assert not docker.image.inspect(ref).config.cmd and not docker.image.inspect(ref).config.entrypoint
        assert owner_in_image(ref, "/var/lib/data") == (70, 71, 0o750)
        # A folder the program makes at run time: its nearest parent's owner, and 0700.
        assert owner_in_image(ref, "/var/lib/data/pgdata") == (70, 71, 0o700)
    finally:
        docker.image.remove(ref, force=True)
