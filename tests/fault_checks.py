"""Looking at a fault from outside the product: Docker's own state and events, and the member's network namespace
read with our own helper container (not the product's code), for the fault-catalog tests."""

from __future__ import annotations

import asyncio

import functools
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime

from python_on_whales import docker

from activities.images import ensure_images
from durable_chaos.faults.netns import nettools_image

NETTOOLS = nettools_image().ref
HELPER_LABEL = "durable-chaos.helper"  # what the product's helpers carry (value: the run's fault tag)
PROBE_LABEL = "durable-chaos.test-probe"  # what ours carry, so they are never mistaken for the product's


def qdisc_handle(tag: str) -> str:
    """The root qdisc handle a run with this fault tag uses (faults.network._Qdisc)."""
    return format(int(tag[:4], 16) % 0xFFF0 + 1, "x")


@dataclass(frozen=True)
class NetState:
    """What a member's network namespace holds: the filter and nat tables (iptables -S) and the qdiscs."""

    filter: str
    nat: str
    qdiscs: str

    def chains(self) -> list[str]:
        return [line.split()[1] for line in self.filter.splitlines() if line.startswith("-N CHAOS-")]

    def rules_of(self, chain: str) -> list[str]:
        return [line for line in self.filter.splitlines() if line.startswith(f"-A {chain} ")]

    def hooks(self, chain: str) -> list[str]:
        return [line for line in self.filter.splitlines()
                if line.startswith(("-A INPUT", "-A OUTPUT")) and line.endswith(f"-j {chain}")]

    def foreign_qdiscs(self) -> list[str]:
        """Root qdiscs that are not the default (noqueue/pfifo/mq on a fresh veth)."""
        return [line for line in self.qdiscs.splitlines()
                if " root " in line and not re.match(r"qdisc (noqueue|pfifo_fast|mq|fq_codel) 0: ", line)]


SEP = "=====CUT====="


@functools.cache
def _nettools_built() -> None:
    ensure_images([nettools_image()])  # a test run on its own, on a fresh machine, has not built it yet


def net_state_blocking(container_id: str) -> NetState:
    """The namespace of `container_id`, read by a short-lived helper of our own (NET_ADMIN only, like the product's)."""
    _nettools_built()
    script = f"iptables -w -S; echo {SEP}; iptables -w -t nat -S; echo {SEP}; tc qdisc show"
    proc = subprocess.run(["docker", "run", "--rm", "--network", f"container:{container_id}", "--cap-drop", "ALL",
                           "--cap-add", "NET_ADMIN", "--label", f"{PROBE_LABEL}=1", NETTOOLS, "sh", "-ec", script],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    filt, nat, qdiscs = proc.stdout.split(SEP + "\n")
    return NetState(filt, nat, qdiscs)


def containers_blocking(copy) -> dict[str, object]:
    """service -> its container (python-on-whales), fresh from Docker."""
    return {c.config.labels["com.docker.compose.service"]: c for c in copy.docker.compose.ps(all=True)}


def container_ids_blocking(copy) -> dict[str, str]:
    return {svc: c.id for svc, c in containers_blocking(copy).items()}


def docker_state_blocking(copy) -> dict[str, tuple[bool, bool]]:
    """service -> (running, paused), as Docker reports it now."""
    return {svc: (bool(c.state.running), bool(c.state.paused)) for svc, c in containers_blocking(copy).items()}


def net_states_blocking(copy, services=None) -> dict[str, NetState]:
    ids = container_ids_blocking(copy)
    return {svc: net_state_blocking(ids[svc]) for svc in (services or copy.instance.subject.targets)}


async def events_since(copy, since: datetime, actions=("kill", "die", "stop", "start", "pause", "unpause")):
    """(service, action, attributes) of the copy's container events since `since` exactly, from Docker's events."""
    return [(e.service, e.action, e.attributes) for e in (await copy.container_events(since)) if e.action in actions]


def helpers_left_blocking(tags=(), member_ids=()) -> list[str]:
    """Product helper containers that still exist (in any state) of these fault tags or in the namespace of these
    containers. Other people's helpers (other tests may run beside these) are not ours to judge."""
    out = docker.container.list(all=True, filters=[("label", HELPER_LABEL)])
    namespaces = {f"container:{i}" for i in member_ids}
    return [f"{c.name} ({c.config.labels.get(HELPER_LABEL)}, {c.state.status})" for c in out
            if c.config.labels.get(HELPER_LABEL) in set(tags) or c.host_config.network_mode in namespaces]


def leftovers_blocking(copy, tags=()) -> list[str]:
    """Everything a fault could leave behind on the copy: stopped or paused members, CHAOS chains, foreign root
    qdiscs, and helper containers of the given fault tags. Empty when the copy is clean."""
    found = []
    for svc, (running, paused) in docker_state_blocking(copy).items():
        if not running:
            found.append(f"{svc} is not running")
        if paused:
            found.append(f"{svc} is paused")
    ids = container_ids_blocking(copy)
    states = docker_state_blocking(copy)
    for svc in copy.instance.subject.targets:
        if not states[svc][0]:
            continue
        state = net_state_blocking(ids[svc])
        found += [f"{svc}: chain {chain} left" for chain in state.chains()]
        found += [f"{svc}: CHAOS hook left: {line}" for line in state.filter.splitlines() if "CHAOS-" in line
                  and line.startswith("-A ") and not line.startswith("-A CHAOS-")]
        found += [f"{svc}: qdisc left: {line}" for line in state.foreign_qdiscs()]
    found += [f"helper left: {h}" for h in helpers_left_blocking(tags, ids.values())]
    return found


def host_chaos_rules_blocking() -> list[str]:
    """CHAOS rules in the host's own namespace, which the product must never touch."""
    proc = subprocess.run(["iptables", "-w", "-S"], check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "CHAOS-" in line]


# What tests await: each runs its Docker calls (python-on-whales, a helper container, iptables) in a thread, so an
# event loop that also serves in-process workers keeps their heartbeats going meanwhile. The `_blocking` versions are
# for code that already runs in a thread.
def _in_thread(fn):
    @functools.wraps(fn)
    async def run(*args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)
    return run


containers = _in_thread(containers_blocking)
container_ids = _in_thread(container_ids_blocking)
docker_state = _in_thread(docker_state_blocking)
net_states = _in_thread(net_states_blocking)
net_state = _in_thread(net_state_blocking)
leftovers = _in_thread(leftovers_blocking)
helpers_left = _in_thread(helpers_left_blocking)
host_chaos_rules = _in_thread(host_chaos_rules_blocking)
