"""The second Docker engine of tests/second_engine.py, which the worker-per-Docker-host tests stand on: it is a
different engine (its own ID, its own containers), containers on it reach each other and publish ports to the host,
compose follows its DOCKER_HOST, and its cleanup leaves nothing behind, also after the process that started it was
killed. The checks of "nothing left" here read the machine directly (ip, iptables, /proc), not through the helper."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from activities.images import ensure_images
from durable_chaos.faults.delay import delayer_image
from tests.conftest import free_port
from tests.second_engine import TMP, cleanup_leftovers, second_docker_engine

# Debian's python3 (the delay fault's helper image, built locally like the subject images): a server and a client.
IMAGE = delayer_image().ref
SERVE = ["-m", "http.server", "8000"]
SLEEP = ["-c", "import time; time.sleep(600)"]


@pytest.fixture(scope="module")
def engine():
    ensure_images([delayer_image()])  # on the first engine; built once per machine
    with second_docker_engine([IMAGE]) as engine:
        yield engine


def http_get(port: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return r.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def first_engine(*args: str) -> str:
    """`docker ARGS` on the first engine (this process's own DOCKER_HOST)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def leftovers(eid: str, subnets: list[ipaddress.IPv4Network], port: int) -> list[str]:
    """What of engine `eid` is still on the machine, read directly from the kernel and the tools."""
    left = []
    if (TMP / eid).exists():
        left.append(f"directory {TMP / eid}")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    left += [f"link {line}" for line in links.splitlines() if line.split()[0].split("@")[0] == eid]
    addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout)
    left += [f"address {a['local']} on {link['ifname']}" for link in addrs for a in link.get("addr_info", [])
             if any(ipaddress.ip_address(a["local"]) in s for s in subnets)]
    rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    left += [f"rule {line}" for line in rules.splitlines() if eid in line]
    left += [f"mount {line}" for line in Path("/proc/self/mounts").read_text().splitlines() if f"/{eid}" in line]
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"/{eid}" in cmdline or ("docker-proxy" in cmdline and f"-host-port {port} " in cmdline):
            left.append(f"process {proc.name}: {cmdline}")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            left.append(f"something still listens on 127.0.0.1:{port}")
    return left


def test_it_is_another_engine(engine):
    first_id = first_engine("info", "--format", "{{.ID}}").strip()
    assert engine.engine_id and first_id and engine.engine_id != first_id
    assert engine.cli("info", "--format", "{{.ID}}").stdout.strip() == engine.engine_id
    # Copied once; asked again, it has the image already.
    assert engine.docker.image.exists(IMAGE)
    assert engine.load_images([IMAGE]) == []


def test_containers_reach_each_other_and_a_published_port_reaches_the_host(engine):
    net = f"{engine.id}-net"
    engine.docker.network.create(net)
    port = free_port()
    server = engine.docker.run(IMAGE, SERVE, entrypoint="python3", name=f"{engine.id}-server", networks=[net],
                               publish=[(f"127.0.0.1:{port}", 8000)], detach=True)
    ip = server.network_settings.networks[net].ip_address
    assert ipaddress.ip_address(ip) in engine.pool, (ip, engine.pool)  # its networks come from its own pool
    # By the server's name (the engine's embedded DNS), retried until it listens; at most 20 s.
    fetch = ("import time, urllib.request\n"
             "deadline = time.monotonic() + 20\n"
             "while True:\n"
             "    try: print(urllib.request.urlopen('http://%s:8000/', timeout=2).status); break\n"
             "    except OSError as err:\n"
             "        if time.monotonic() > deadline: print(err); break\n"
             "        time.sleep(0.2)\n") % server.name
    out = engine.docker.run(IMAGE, ["-c", fetch], entrypoint="python3", networks=[net], remove=True,
                            name=f"{engine.id}-client")
    assert out.strip() == "200"  # by name, across the bridge the first engine's FORWARD policy would drop
    assert http_get(port) == 200


def test_its_containers_and_compose_projects_are_not_on_the_first_engine(engine, tmp_path):
    name = f"{engine.id}-alone"
    engine.docker.run(IMAGE, SLEEP, entrypoint="python3", name=name, detach=True)
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(f"services:\n  app:\n    image: {IMAGE}\n    entrypoint: {json.dumps(['python3', *SLEEP])}\n")
    project = f"{engine.id}-compose"
    up = subprocess.run(["docker", "compose", "-p", project, "-f", str(compose_file), "up", "-d"],
                        capture_output=True, text=True, env=engine.env(), timeout=120)
    assert up.returncode == 0, up.stderr
    second = engine.cli("ps", "--format", "{{.Names}}").stdout.split()
    first = first_engine("ps", "-a", "--format", "{{.Names}}").split()
    assert name in second and f"{project}-app-1" in second, second
    assert not [n for n in first if engine.id in n], first
    assert engine.id not in first_engine("network", "ls", "--format", "{{.Name}}")
    down = subprocess.run(["docker", "compose", "-p", project, "-f", str(compose_file), "down", "-t", "0"],
                          capture_output=True, text=True, env=engine.env(), timeout=120)
    assert down.returncode == 0, down.stderr


def test_a_live_sessions_engine_is_spared_by_cleanup_leftovers(engine):
    assert engine.id not in cleanup_leftovers()
    assert engine.cli("info", "--format", "{{.ID}}").stdout.strip() == engine.engine_id


def test_cleanup_leaves_nothing_even_with_containers_running(engine):
    net = f"{engine.id}-busy"
    engine.docker.network.create(net)
    port = free_port()
    engine.docker.run(IMAGE, SERVE, entrypoint="python3", name=f"{engine.id}-busy", networks=[net],
                      publish=[(f"127.0.0.1:{port}", 8000)], volumes=[(f"{engine.id}-vol", "/data")], detach=True)
    assert http_get(port) == 200
    subnets = [engine.bridge_subnet, engine.pool]
    assert leftovers(engine.id, subnets, port)  # the check sees a live engine
    started = time.monotonic()
    engine.stop()
    print(f"cleanup took {time.monotonic() - started:.1f} s")
    assert leftovers(engine.id, subnets, port) == []
    engine.stop()  # idempotent
    assert first_engine("info", "--format", "{{.ID}}").strip()  # the first engine is untouched
    assert "docker0" in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout


def test_a_crashed_runs_engine_is_swept_by_the_next_run():
    """The process that started an engine is SIGKILLed, with a container running and a port published: dockerd,
    containerd, the shim, the container, docker-proxy and their mounts all outlive it, until cleanup_leftovers."""
    ensure_images([delayer_image()])
    port = free_port()
    crash = ("import os, signal\n"
             "from tests.second_engine import SecondEngine\n"
             "e = SecondEngine(); e.start(); e.load_images([%r])\n"
             "e.docker.run(%r, %r, entrypoint='python3', publish=[('127.0.0.1:%d', 8000)], detach=True)\n"
             "print(e.id, e.bridge_subnet, e.pool, flush=True)\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n") % (IMAGE, IMAGE, SERVE, port)
    proc = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == -9, proc.stderr
    eid, *nets = proc.stdout.split()
    subnets = [ipaddress.ip_network(n) for n in nets]
    try:
        assert http_get(port) == 200  # the orphaned engine still serves
        left = leftovers(eid, subnets, port)
        assert any(x.startswith("process") for x in left) and any(x.startswith("mount") for x in left), left
        assert eid in cleanup_leftovers()
        assert leftovers(eid, subnets, port) == []
    finally:
        cleanup_leftovers()  # idempotent: a no-op when the assertions above held
