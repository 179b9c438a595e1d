"""Running commands inside a member's network namespace, never the host's.

A short-lived helper container joins the member's namespace (`--network container:ID`) with the NET_ADMIN
capability and no other, runs one shell script (iptables, tc) and is removed by the daemon when it exits, so a
worker killed mid-call leaves no helper behind. The helper image is built locally like the subject images
(a Debian rootfs with iptables and iproute2). This works the same against a remote Docker host.
"""

from __future__ import annotations

import functools

from python_on_whales import DockerException, docker

from durable_chaos.images import FromDebian, ImageSpec, local_or_upstream

# Tests and the reaper find helpers by this label (its value is the run's fault tag).
HELPER_LABEL = "durable-chaos.helper"


def nettools_image() -> ImageSpec:
    return local_or_upstream("chaos-nettools:bookworm", FromDebian(packages=("iptables", "iproute2")),
                             "CHAOS_NETTOOLS_IMAGE")


class NotRunning(RuntimeError):
    """The member has no network namespace to enter: it is stopped, so whatever rules it had died with it."""


def run_in_netns(container_id: str, script: str, tag: str) -> str:
    """Run `script` (sh -e) in the network namespace of `container_id`; returns its output."""
    return _run(f"container:{container_id}", script, tag)


def run_in_scratch_netns(script: str) -> str:
    """Run `script` in a fresh, empty network namespace of its own: for probing what the kernel can do."""
    return _run("none", script, "probe")


def _run(network: str, script: str, tag: str) -> str:
    try:
        return docker.run(nettools_image().ref, ["sh", "-ec", script], remove=True, networks=[network],
                          cap_drop=["ALL"], cap_add=["NET_ADMIN"], labels={HELPER_LABEL: tag})
    except DockerException as exc:
        text = exc.stderr or str(exc)
        if "non running container" in text or "is not running" in text:
            raise NotRunning(text.strip().splitlines()[-1]) from exc
        raise


# Everything in the filter table but the default policies, and every root qdisc but the kernel's defaults: what an
# SRE would look at to see whether someone is dropping or shaping a member's traffic.
OBSERVE = """iptables -w -S 2>/dev/null | grep -v '^-P' || true
for d in $(ls /sys/class/net); do [ "$d" = lo ] && continue
tc qdisc show dev "$d" root | grep -v -e ' noqueue ' -e ' noop ' -e ' pfifo_fast ' | sed "s/^/$d: /" || true
done"""


def network_rules(container_id: str) -> list[str]:
    """Packet filters and queueing disciplines in a running member's namespace (evidence for diagnosis); empty when
    the helper image is not built here (diagnosis never waits for a build) or the member is not running."""
    if not docker.image.exists(nettools_image().ref):
        return []
    try:
        return [line.strip() for line in run_in_netns(container_id, OBSERVE, "observe").splitlines() if line.strip()]
    except (NotRunning, DockerException):
        return []


@functools.cache
def kernel_lacks_qdisc(qdisc: str) -> str | None:
    """None if this Docker host's kernel has the queueing discipline `qdisc`, else its kernel release. Tried in a
    scratch namespace, so nothing real is touched; asked once per process."""
    out = run_in_scratch_netns(f"uname -r; tc qdisc add dev lo root {qdisc} >/dev/null 2>&1 && echo has || echo lacks")
    release, answer = (out.strip().splitlines() + ["", ""])[:2]
    return None if answer == "has" else release
