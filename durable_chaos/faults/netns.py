"""Running commands inside a member's network namespace, never the host's.

A short-lived helper container joins the member's namespace (`--network container:ID`) with the NET_ADMIN
capability and no other, runs one shell script (iptables, tc) and is removed by the daemon when it exits, so a
worker killed mid-call leaves no helper behind. The helper image is built locally like the subject images
(a Debian rootfs with iptables and iproute2). This works the same against a remote Docker host.
"""

from __future__ import annotations

from python_on_whales import DockerException, docker

from durable_chaos.docker_engine import image_exists
from durable_chaos.images import FromDebian, ImageSpec, local_or_upstream

# Tests and the reaper find helpers by this label (its value is the run's fault tag).
HELPER_LABEL = "durable-chaos.helper"


def nettools_image() -> ImageSpec:
    return local_or_upstream("chaos-nettools:bookworm", FromDebian(packages=("iptables", "iproute2")),
                             "CHAOS_NETTOOLS_IMAGE")


class NotRunning(RuntimeError):
    """The member has no network namespace to enter: it is stopped, so whatever rules it had died with it."""


def not_running(exc: DockerException) -> NotRunning | None:
    """The helper could not join the member's namespace because the member is not running (Docker's own words), or
    None for any other failure."""
    said = [line for line in (exc.stderr or str(exc)).splitlines()
            if "non running container" in line or "is not running" in line]
    return NotRunning(said[0].strip()) if said else None


def run_in_netns(container_id: str, script: str, tag: str) -> str:
    """Run `script` (sh -e) in the network namespace of `container_id`; returns its output."""
    return _run(f"container:{container_id}", script, tag)


def _run(network: str, script: str, tag: str) -> str:
    try:
        return run_helper(script, tag, networks=[network], cap_drop=["ALL"], cap_add=["NET_ADMIN"])
    except DockerException as exc:
        raise not_running(exc) or exc


def run_helper(script: str, tag: str, **options) -> str:
    """Run `script` (sh -e) in a short-lived helper of the nettools image, with `options` for `docker run`; its
    output. The daemon removes the helper when it exits, so a worker killed mid-call leaves none behind.

    pull="never": python-on-whales would otherwise inspect the image first (a docker process per helper); it is
    built before any helper runs, and there is no registry to pull it from. Streamed: a plain `docker.run` leaves
    the CLI's stderr uncaptured (it reached the worker's own stderr, and the DockerException said nothing), and
    Docker's words there tell a stopped member apart (`not_running`)."""
    out = docker.run(nettools_image().ref, ["sh", "-ec", script], remove=True, pull="never",
                     labels={HELPER_LABEL: tag}, stream=True, **options)
    return b"".join(line for source, line in out if source == "stdout").decode().rstrip("\n")


# Starts each probe's part of the output in `probe_netns`: no iptables rule or qdisc line reads like it.
PROBE_START = "@@durable-chaos-probe@@"


def probe_netns(container_id: str, probes: list[str]) -> dict[str, list[str]]:
    """probe -> its output lines, from a running member's namespace, every probe run by one helper (a helper per
    fault kind would multiply the seconds evidence takes). Empty when the helper image is not built here (diagnosis
    never waits for a build) or the member is not running: there is nothing to see."""
    if not probes or not image_exists(nettools_image().ref):
        return {}
    script = "\n".join(f"echo {PROBE_START}\n{probe}" for probe in probes)
    try:
        out = run_in_netns(container_id, script, "observe")
    except (NotRunning, DockerException):
        return {}
    parts = out.split(PROBE_START)[1:]
    return {probe: [line.strip() for line in part.splitlines() if line.strip()] for probe, part in zip(probes, parts)}
