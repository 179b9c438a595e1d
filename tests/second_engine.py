"""A second Docker engine (dockerd) on this machine, for integration tests of a worker per Docker host.

A worker per Docker host is only proven against two real engines, and a test machine has one. A second dockerd
beside the first needs care, because both share one kernel, one iptables and one bridge namespace:

- it gets a bridge of its own (with `--bridge none` dockerd deletes the first engine's docker0) and its own
  socket, data-root, exec-root and pidfile, all under `/tmp/<id>`;
- its subnets (the bridge's, and the address pool of its user networks) lie outside the first engine's default
  address pools (172.17-172.31/16, 192.168/16): the first engine checks a new network only against the host's
  routes, and a pool of the second engine has no route until a network is created in it, so a compose project
  started meanwhile on the first engine could otherwise be given the same /16;
- it runs with `--iptables=false` (the first engine owns the firewall), so the first engine's FORWARD policy (DROP)
  would drop traffic between its containers: ACCEPT rules in DOCKER-USER, marked with the id as comment, let it
  through. Published ports work through docker-proxy (the default userland proxy);
- it has a key of its own (`deprecated-key-path`): Debian's 20.10 derives `docker info`'s ID from the key, and
  with the default one (/etc/docker/key.json) both engines report the same ID;
- its containers have no way out (no NAT without iptables): names its embedded DNS does not know are forwarded to
  the host's resolvers and time out after 10 s, so address containers by their container name or alias;
- everything it creates carries one id, `dcs-<6 hex>`: the directory, the bridge, the rules' comment, and (through
  the directory's paths) the processes, so cleanup finds exactly those, also after a crashed run
  (`cleanup_leftovers`), and never touches the first engine's containers, networks or rules.

Use `second_docker_engine()` (a context manager, for a module- or session-scoped fixture) or the `second_engine`
fixture (module scope): `from tests.second_engine import second_engine  # noqa: F401`. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Iterator

import pytest
from python_on_whales import DockerClient

PREFIX = "dcs-"
ID = re.compile(r"dcs-[0-9a-f]{6}")
TMP = Path("/tmp")
# Serialises choosing subnets and sweeping leftovers between test sessions running at once. Not per id: it stays.
LOCK = TMP / "dcs.lock"
CHAIN = "DOCKER-USER"
# Where the bridge's and the pool's /16 are taken from: none of it is in the first engine's default address pools.
CANDIDATES = [ipaddress.ip_network(f"10.{b}.0.0/16") for b in range(200, 250)]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
Net = ipaddress.IPv4Network


def _run(*argv: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


class SecondEngine:
    """A dockerd of its own, named by `id`. `start()` brings it up, `stop()` removes everything it made (idempotent,
    also after a failed start). `host` is its DOCKER_HOST, `docker` a python-on-whales client for it."""

    def __init__(self) -> None:
        self.id = f"{PREFIX}{secrets.token_hex(3)}"
        self.dir = TMP / self.id
        self.socket = self.dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.bridge = self.id  # 10 characters: a link name may have 15
        self.bridge_subnet: Net | None = None  # the default bridge's (containers run without --network)
        self.pool: Net | None = None  # user networks' /24s are taken from here
        self.engine_id = ""  # `docker info`'s ID: what tells two engines apart
        self.docker = DockerClient(host=self.host)
        self.log = self.dir / "dockerd.log"
        self._proc: subprocess.Popen | None = None

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a subprocess (docker CLI, compose, a worker) that should talk to this engine."""
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}  # a context would win over the host
        return {**env, "DOCKER_HOST": self.host, **extra}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`docker -H <this engine> ARGS`, captured."""
        return _run("docker", "-H", self.host, *args, timeout=timeout)

    def __enter__(self) -> SecondEngine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        with _lock():
            _cleanup_leftovers()
            used = _used_networks()
            free = [c for c in CANDIDATES if not any(c.overlaps(u) for u in used)]
            if len(free) < 2:
                raise RuntimeError(f"no two free /16 among {CANDIDATES[0]}..{CANDIDATES[-1]} for a second engine")
            self.bridge_subnet, self.pool = free[0], free[1]
            self.dir.mkdir(mode=0o700)
            # Who owns the id, and its subnets: cleanup_leftovers spares a live owner's engine, and a concurrent
            # start must not take the pool (it has no route before a network exists in it).
            (self.dir / "meta.json").write_text(json.dumps(
                {"owner": _process_identity(os.getpid()), "subnets": [str(self.bridge_subnet), str(self.pool)]}))
            gateway = f"{self.bridge_subnet[1]}/{self.bridge_subnet.prefixlen}"
            for argv in (["ip", "link", "add", self.bridge, "type", "bridge"],
                         ["ip", "addr", "add", gateway, "dev", self.bridge],
                         ["ip", "link", "set", self.bridge, "up"]):
                _check(*argv)
            for net in (self.bridge_subnet, self.pool):
                for direction in ("-s", "-d"):
                    _check("iptables", "-I", CHAIN, direction, str(net), "-m", "comment", "--comment", self.id,
                           "-j", "ACCEPT")
        # A config file of its own: a /etc/docker/daemon.json meant for the first engine (hosts, bridge, pools)
        # would clash with the flags below or leak into this engine. And a key of its own: 20.10 derives
        # `docker info`'s ID from it (default /etc/docker/key.json, the first engine's key), so without one both
        # engines have the same ID. It has no command-line flag, only this setting.
        (self.dir / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(self.dir / "key.json")}))
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                ["dockerd", "--host", self.host, "--config-file", str(self.dir / "daemon.json"),
                 "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
                 "--pidfile", str(self.dir / "docker.pid"), "--bridge", self.bridge,
                 "--iptables=false", "--ip6tables=false",
                 "--default-address-pool", f"base={self.pool},size=24"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            info = self.cli("info", "--format", "{{.ID}}", timeout=10)
            if info.returncode == 0 and info.stdout.strip():
                self.engine_id = info.stdout.strip()
                return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {self._proc.returncode}" if self._proc.poll() is not None
                       else f"did not answer within {START_TIMEOUT_S:.0f} s")
                raise RuntimeError(f"second dockerd {self.id} {why}; last lines of {self.log}:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def load_images(self, refs: Iterable[str]) -> list[str]:
        """Copy images from the first engine (`docker save REF | docker -H <this> load`): there is no registry to
        pull from. Skips refs this engine already has; returns the refs it loaded."""
        loaded = []
        for ref in refs:
            if self.cli("image", "inspect", ref).returncode == 0:
                continue
            with open(self.dir / "save.err", "w+") as err:
                save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE, stderr=err)
                try:
                    load = _run("docker", "-H", self.host, "load", stdin=save.stdout, timeout=300)
                finally:
                    save.stdout.close()
                    save.wait()
                err.seek(0)
                if save.returncode or load.returncode:
                    raise RuntimeError(f"copying {ref} to {self.id} failed: {err.read().strip()} "
                                       f"{load.stderr.strip()}")
            loaded.append(ref)
        return loaded

    def stop(self) -> None:
        """Remove everything this engine made; safe to call twice, after a failed start, or on a dead engine."""
        if self._dockerd_alive():
            # Through the engine first, so it unmounts and deletes what it made as it normally does.
            with contextlib.suppress(subprocess.SubprocessError):
                ids = self.cli("ps", "-aq").stdout.split()
                if ids:
                    self.cli("rm", "-f", "-v", *ids, timeout=120)
                self.cli("network", "prune", "-f")
                self.cli("volume", "prune", "-f")
            self._stop_dockerd()
        elif self._proc is not None and self._proc.poll() is None:  # started but never answered
            self._stop_dockerd()
        with _lock():
            _sweep(self.id)  # whatever the engine left (a crash, a kill): processes, mounts, links, rules, dir

    def _dockerd_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.dir / "docker.pid").read_text().strip())
        return self._proc.pid if self._proc is not None else None

    def _dockerd_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self._dockerd_pid()
        return pid is not None and _process_identity(pid) is not None

    def _stop_dockerd(self) -> None:
        """SIGTERM (it stops its containerd), SIGKILL after STOP_TIMEOUT_S."""
        pid = self._dockerd_pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self._dockerd_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._dockerd_alive():
                return


@contextlib.contextmanager
def second_docker_engine(images: Iterable[str] = ()) -> Iterator[SecondEngine]:
    """A started second engine with `images` copied from the first; everything it made is removed on exit, also
    when the body fails. Sweeps a crashed run's leftovers before starting."""
    engine = SecondEngine()
    try:
        engine.start()
        engine.load_images(images)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def second_engine() -> Iterator[SecondEngine]:
    """A second Docker engine for a test module (import it into the module to use it)."""
    with second_docker_engine() as engine:
        yield engine


def cleanup_leftovers() -> list[str]:
    """Remove what crashed runs left (directories /tmp/dcs-*, bridges dcs-*, DOCKER-USER rules with a dcs- comment,
    dockerd/containerd/shim processes under /tmp/dcs-*, and their containers, mounts and docker-proxies). An
    engine whose owning process still runs (another test session) is spared. Returns the ids removed."""
    with _lock():
        return _cleanup_leftovers()


# ---- the machinery; every function below finds things by id, never by a broad pattern --------------------------


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check(*argv: str) -> None:
    proc = _run(*argv)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _process_identity(pid: int) -> list[int] | None:
    """[pid, start time]: a pid alone may be reused by the time someone checks it. None if gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in "ZX" else [pid, int(fields[19])]


def _meta(eid: str) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((TMP / eid / "meta.json").read_text())
    return {}


def _alive(eid: str) -> bool:
    owner = _meta(eid).get("owner")
    return bool(owner) and _process_identity(owner[0]) == owner


def _processes() -> Iterator[tuple[int, list[str]]]:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                yield int(p.name), (p / "cmdline").read_bytes().decode(errors="replace").split("\0")


def _rules() -> list[str]:
    return _run("iptables", "-S", CHAIN).stdout.splitlines()


def _rule_id(rule: str) -> str | None:
    m = re.search(r'--comment "?(dcs-[0-9a-f]{6})"?(\s|$)', rule)
    return m.group(1) if m else None


def _bridge_addresses() -> dict[str, list[Net]]:
    out = json.loads(_run("ip", "-j", "addr", "show", "type", "bridge").stdout or "[]")
    return {link["ifname"]: [ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
                             for a in link.get("addr_info", []) if a.get("family") == "inet"] for link in out}


def _used_networks() -> list[Net]:
    """Subnets a new engine must not overlap: the host's routes (the first engine's networks each have one), and
    the subnets of the other second engines alive (a pool has no route until a network is made in it)."""
    used = []
    for route in json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        with contextlib.suppress(ValueError):
            if route.get("dst", "default") != "default":
                used.append(ipaddress.ip_network(route["dst"], strict=False))
    for d in TMP.glob(f"{PREFIX}*"):
        used += [ipaddress.ip_network(s) for s in _meta(d.name).get("subnets", [])]
    for rule in _rules():
        if _rule_id(rule):
            used += [ipaddress.ip_network(s, strict=False) for s in re.findall(r"-[sd] (\S+)", rule)]
    return used


def _cleanup_leftovers() -> list[str]:
    found = {d.name for d in TMP.glob(f"{PREFIX}*") if ID.fullmatch(d.name)}
    found |= {name for name in _bridge_addresses() if ID.fullmatch(name)}
    found |= {eid for eid in map(_rule_id, _rules()) if eid}
    for _, argv in _processes():
        found |= set(re.findall(rf"{TMP}/(dcs-[0-9a-f]{{6}})(?:/|$)", " ".join(argv)))
    gone = sorted(eid for eid in found if not _alive(eid))
    for eid in gone:
        _sweep(eid)
    return gone


def _sweep(eid: str) -> None:
    """Force everything of `eid` away, in the order that frees each next step: processes (containers, dockerd,
    containerd, shims, docker-proxies), mounts, links, rules, the directory. Idempotent."""
    root = TMP / eid
    subnets = [ipaddress.ip_network(s) for s in _meta(eid).get("subnets", [])]
    subnets += [ipaddress.ip_network(s, strict=False) for rule in _rules() if _rule_id(rule) == eid
                for s in re.findall(r"-[sd] (\S+)", rule)]
    subnets += _bridge_addresses().get(eid, [])

    victims = []
    # Containers' init processes (the rest of a container dies with its pid namespace), checked by cgroup so a
    # reused pid is never hit.
    for config in root.glob("data/containers/*/config.v2.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads(config.read_text())["State"]["Pid"]
            if pid and config.parent.name in Path(f"/proc/{pid}/cgroup").read_text():
                victims.append(pid)
    for pid, argv in _processes():
        line = " ".join(argv)
        if f"{root}/" in line or line.endswith(str(root)):
            victims.append(pid)  # dockerd, containerd, shims: their flags name the directory
        elif argv and argv[0].endswith("docker-proxy") and "-container-ip" in argv:
            ip = argv[argv.index("-container-ip") + 1]
            with contextlib.suppress(ValueError):
                if any(ipaddress.ip_address(ip) in net for net in subnets):
                    victims.append(pid)
    victims = [v for v in victims if v != os.getpid()]
    identities = [i for i in map(_process_identity, victims) if i]
    for pid, _ in identities:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_process_identity(i[0]) == i for i in identities) and time.monotonic() < deadline:
        time.sleep(0.1)

    for _ in range(3):  # stacked mounts: the newest first, lazily as a last resort
        mounts = [m for m in _mounts() if m == str(root) or m.startswith(f"{root}/")]
        if not mounts:
            break
        for m in reversed(mounts):
            if _run("umount", m).returncode != 0:
                _run("umount", "-l", m)

    for name, nets in _bridge_addresses().items():
        # The engine's user networks' bridges (br-<network id>) left by a kill: by their subnet, inside its own.
        if name == eid or (name.startswith("br-") and any(n.subnet_of(s) for n in nets for s in subnets)):
            _run("ip", "link", "del", name)
    for rule in _rules():
        if _rule_id(rule) == eid:
            _run("iptables", "-D", *rule.split()[1:])
    shutil.rmtree(root, ignore_errors=True)


def _mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1]) for line in f]
