"""Latency, reordering and duplication without netem: iptables hands the member's packets to an NFQUEUE in its own
network namespace, and a delayer the run owns holds each one before letting it go.

This kernel (and many others) has no `sch_netem`, the queueing discipline every chaos tool uses for delay; NFQUEUE
is in every kernel that has iptables. The delayer (`faults/delayer/delayer.py`) runs in a long-lived helper
container joined to the member's namespace (`--network container:<member>`, NET_ADMIN only), named and labelled
after the run's fault tag, so the undo, the guard and the reaper find it from the tag alone.

It fails open: the rule carries `--queue-bypass` (no delayer bound to the queue: packets pass undelayed) and the
queue has the FAIL_OPEN flag (queue full: packets pass). A delayer that dies, or is killed, ends the delay at once;
it never becomes a partition. Undo removes the rules, then the delayer.

Each rule carries a comment naming its kind and parameters: the evidence reads `iptables -S` in every member
(whoever put a rule there), and three kinds share the mechanism.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from python_on_whales import DockerException, docker

from durable_chaos.contracts import ContainerState
from durable_chaos.faults.base import BadFault, Target
from durable_chaos.faults.netns import HELPER_LABEL, not_running
from durable_chaos.faults.network import FILTER_RULES, HOOKS, _Filter
from durable_chaos.images import FromDebian, ImageSpec, content_tag, local_or_upstream

DELAYER = Path(__file__).parent / "delayer"
# The mark the delayer puts on the copies it sends (delayer.COPY_MARK): the rule lets them pass unqueued.
COPY_MARK = "0x43484153"
STATS = re.compile(r"held (\d+) packets, mean ([0-9.]+) ms, max ([0-9.]+) ms, duplicated (\d+)")
QUEUED = re.compile(r'--comment "?chaos (\S+) ([^"]*?)"? .*-j NFQUEUE --queue-num (\d+)')
# How long the delayer may take to bind its queue before the inject gives up (a cold start of python3).
BIND_TIMEOUT_S = 10.0


def delayer_image() -> ImageSpec:
    # Tagged by the program's content: a changed delayer.py is built again, not run as yesterday's.
    return local_or_upstream(content_tag("chaos-delayer", (DELAYER / "Dockerfile", DELAYER / "delayer.py")),
                             FromDebian(packages=("python3",), dockerfile=DELAYER / "Dockerfile",
                                        context_files=(DELAYER / "delayer.py",)),
                             "CHAOS_DELAYER_IMAGE")


def queue_number(tag: str) -> int:
    """The NFQUEUE number for a fault tag, 1..65000. Queues are per network namespace, and a member carries at most
    one fault at a time, so the tag alone is enough."""
    return int(tag[:4], 16) % 65000 + 1


def delayer_name(t: Target) -> str:
    # Per member: one fault with --count 2 puts a delayer in each of two namespaces.
    return f"chaos-delay-{t.tag}-{t.container.id[:12]}"


def _names(value):
    """`etcd1,etcd2` (the command line's form) or a list (JSON)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class _DelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Literal["out", "in", "both"] = Field(
        default="out", description="the member's outgoing packets, incoming ones, or both")
    peers: list[str] | None = Field(default=None, description="only traffic to and from these members, e.g. "
                                                              "etcd1,etcd3; default: all but loopback")

    _split = field_validator("peers", mode="before")(_names)


class LatencyParams(_DelayParams):
    delay_ms: float = Field(default=100.0, gt=0, le=60_000, description="added to every packet it holds")
    jitter_ms: float = Field(default=0.0, ge=0, le=60_000, description="± this much, uniformly")
    percent: float = Field(default=100.0, gt=0, le=100, description="share of packets held")


class _Queued(_Filter):
    """Packets to an NFQUEUE, and a delayer bound to it."""

    netns_probe = FILTER_RULES
    out_of_service = False  # it answers, late
    # What the delayer may do besides holding packets (NET_ADMIN: bind the queue, give verdicts).
    capabilities: ClassVar[tuple[str, ...]] = ("NET_ADMIN",)

    def delay_ms(self) -> float:
        raise NotImplementedError

    def share(self) -> float:
        """Percent of packets queued."""
        return 100.0

    def delayer_args(self) -> list[str]:
        return ["--delay-ms", f"{self.delay_ms():g}"]

    def images(self) -> list[ImageSpec]:
        return [*super().images(), delayer_image()]

    def hooks(self) -> tuple[str, ...]:
        direction = self.params.direction
        return {"out": (HOOKS[1],), "in": (HOOKS[0],), "both": HOOKS}[direction]

    def rules(self, t: Target) -> list[str]:
        queue = queue_number(t.tag)
        picked = (f"-m statistic --mode random --probability {self.share() / 100:.4f} "
                  if self.share() < 100 else "")
        tail = (f'-m mark ! --mark {COPY_MARK} -m comment --comment "chaos {self.label()}" '
                f"{picked}-j NFQUEUE --queue-num {queue} --queue-bypass")
        if not self.params.peers:
            return [tail]
        # -d matches in OUTPUT, -s in INPUT: one chain serves both hooks.
        ways = {"out": ("-d",), "in": ("-s",), "both": ("-d", "-s")}[self.params.direction]
        return [f"{way} {ip} {tail}" for ip in t.peer_addresses(self.params.peers) for way in ways]

    def fixed_targets(self, services: tuple[str, ...]) -> list[str] | None:
        # Not a choice of targets: the peers must be members, which the command line can tell before anything runs.
        unknown = [p for p in self.params.peers or [] if p not in services]
        if unknown:
            raise BadFault(f"{self.kind}: peers {', '.join(unknown)} not a member (members: {', '.join(services)})",
                           "params")
        return None

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            if t.service in (self.params.peers or []):
                return f"{self.kind}: {t.service} cannot be its own peer; nothing was injected"
        return None

    def inject(self, t: Target) -> bool:
        started = self._start_delayer(t)
        return super().inject(t) or started

    def undo(self, t: Target) -> bool:
        rules = super().undo(t)  # first: with the rules gone nothing waits on the delayer
        try:
            docker.container.remove(delayer_name(t), force=True)
            removed = True
        except DockerException:  # already gone (the container died with --rm, or a previous undo)
            removed = False
        return rules or removed

    def _start_delayer(self, t: Target) -> bool:
        """The delayer running and bound to its queue; False if it already was (a retried inject)."""
        name = delayer_name(t)
        if docker.container.exists(name):
            found = docker.container.inspect(name)
            t.container.reload()
            # Running, and in the member's namespace of now: a member restarted since has a new one, and a delayer
            # started before that holds an empty, dead namespace's queue.
            if found.state.running and found.state.started_at >= t.container.state.started_at:
                return False
            found.remove(force=True)  # it died, or is stale: a fresh one binds the queue again
        try:
            docker.run(delayer_image().ref, ["--queue", str(queue_number(t.tag)), *self.delayer_args()],
                       detach=True, name=name, networks=[f"container:{t.container.id}"], cap_drop=["ALL"],
                       cap_add=list(self.capabilities), labels={HELPER_LABEL: t.tag}, restart="no")
        except DockerException as exc:
            raise not_running(exc) or exc
        deadline = time.monotonic() + BIND_TIMEOUT_S
        why = f"did not bind its queue within {BIND_TIMEOUT_S:g}s"
        while time.monotonic() < deadline:
            log = docker.container.logs(name)
            if "bound NFQUEUE" in log:
                return True
            if not docker.container.inspect(name).state.running:
                # Read again: it may have written its last words and exited between the read above and the inspect
                # (CI43: "exited: " with nothing after it).
                why = f"exited: {docker.container.logs(name).strip()[-300:]}"
                break
            time.sleep(0.1)
        # A delayer that cannot bind holds nothing: it goes, so a failed inject leaves no helper behind.
        docker.container.remove(name, force=True)
        raise RuntimeError(f"the delayer for {t.service} {why}")

    def stats(self, t: Target) -> tuple[int, float, float, int] | None:
        """(packets held, mean ms, max ms, copies sent) from the delayer's last report; None without one."""
        try:
            log = docker.container.logs(delayer_name(t), tail=5)
        except DockerException:
            return None
        found = STATS.findall(log)
        if not found:
            return None
        held, mean, largest, copies = found[-1]
        return int(held), float(mean), float(largest), int(copies)

    def evidence_of_effect(self, t: Target) -> str | None:
        stats = self.stats(t)
        if stats is None or not stats[0]:
            return None
        held, mean, largest, _ = stats
        return f"{t.service}: {held} packets held, mean {mean:g} ms, max {largest:g} ms ({self.label()})"

    @classmethod
    def observe(cls, probe_out: list[str]) -> list[str]:
        return [rule for rule in probe_out if (m := QUEUED.search(rule)) and m.group(1) == cls.kind]

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        found = next((m for rule in cls.signs_on(c) for m in [QUEUED.search(rule)] if m), None)
        if found is None:
            return None
        return f"{c.service}'s packets go through a delay queue in its namespace (NFQUEUE {found.group(3)}, " \
               f"{found.group(2)}): {cls.effect}"

    effect: ClassVar[str]


class Latency(_Queued):
    kind = "latency"
    help = "delay the member's packets (NFQUEUE and a delayer: no netem needed); fails open"
    Params = LatencyParams
    looks_like = ("delayed: running and answering, but its packets wait in a userspace queue before they go, so "
                  "every answer is late by about the delay; its probe latency is far above its baseline")
    advice = "Remove the delay on {who}'s packets (the NFQUEUE rule and its delayer), or find the slow link."
    effect = "every answer is late"

    def delay_ms(self) -> float:
        return self.params.delay_ms

    def share(self) -> float:
        return self.params.percent

    def delayer_args(self) -> list[str]:
        return [*super().delayer_args(), "--jitter-ms", f"{self.params.jitter_ms:g}"]

    def label(self) -> str:
        p = self.params
        parts = [f"{p.delay_ms:g}ms" + (f" ±{p.jitter_ms:g}ms" if p.jitter_ms else "")]
        if p.percent < 100:
            parts.append(f"{p.percent:g}% of packets")
        if p.direction != "out":
            parts.append({"in": "incoming", "both": "both ways"}[p.direction])
        if p.peers:
            parts.append(f"to {','.join(p.peers)}")
        return "latency " + " ".join(parts)


class ReorderParams(_DelayParams):
    percent: float = Field(default=25.0, gt=0, lt=100, description="share of packets held back")
    gap_ms: float = Field(default=20.0, gt=0, le=10_000, description="how long; packets behind them overtake them")


class Reorder(_Queued):
    kind = "reorder"
    help = "hold back a share of the member's packets so later ones overtake them (NFQUEUE); fails open"
    Params = ReorderParams
    looks_like = ("reordering: running and answering, but a share of its packets arrive after later ones; TCP "
                  "sees duplicate acks and retransmits, tail latency rises, a UDP protocol sees them out of order")
    advice = "Remove the queue reordering {who}'s packets (the NFQUEUE rule and its delayer), or find the bad link."
    effect = "some of its packets arrive after later ones"

    def delay_ms(self) -> float:
        return self.params.gap_ms

    def share(self) -> float:
        return self.params.percent

    def label(self) -> str:
        return f"reorder {self.params.percent:g}% by {self.params.gap_ms:g}ms"


class DuplicateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(default=10.0, gt=0, le=100, description="share of outgoing packets sent twice")
    peers: list[str] | None = Field(default=None, description="only traffic to these members; default: all")

    _split = field_validator("peers", mode="before")(_names)

    @property
    def direction(self) -> str:
        # A copy is sent from the member: only its own outgoing packets can be duplicated.
        return "out"


class Duplicate(_Queued):
    kind = "duplicate"
    help = "send a share of the member's outgoing packets twice (NFQUEUE and a raw socket); fails open"
    Params = DuplicateParams
    looks_like = ("duplication: running and answering, but a share of its packets arrive twice; TCP drops the "
                  "copies (a rise in duplicate segments), a protocol without sequence numbers may act twice")
    advice = "Remove the queue duplicating {who}'s packets (the NFQUEUE rule and its delayer), or find the bad link."
    effect = "some of its packets arrive twice"
    capabilities = ("NET_ADMIN", "NET_RAW")  # NET_RAW: the copy goes out through a raw socket

    def delay_ms(self) -> float:
        return 0.0

    def delayer_args(self) -> list[str]:
        return [*super().delayer_args(), "--duplicate-percent", f"{self.params.percent:g}"]

    def label(self) -> str:
        return f"duplicate {self.params.percent:g}%"

    def evidence_of_effect(self, t: Target) -> str | None:
        stats = self.stats(t)
        if stats is None or not stats[3]:
            return None
        return f"{t.service}: {stats[3]} of {stats[0]} packets sent twice ({self.label()})"
