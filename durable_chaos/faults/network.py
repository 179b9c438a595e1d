"""Network faults, inside the member's own network namespace: partition, loss (iptables), bandwidth (tc); latency,
reordering and duplication are in `delay.py` (iptables and a delayer of the run's own).

Packet filters go in a chain named after the run (`CHAOS-<tag>`), hooked into INPUT and OUTPUT for every
interface but loopback; queueing disciplines get a handle derived from the same tag. Undo and the reaper remove
exactly those and nothing else, and never touch the nat table (Docker's embedded DNS lives there). Each half is
one script, idempotent by itself: a second inject or undo reports what it found instead of failing.

Only traffic between the subject's members is cut by a partition: the host still reaches the target through its
published ports. The runner's probes then read what the partitioned member itself says (no leader, lost peers),
as a monitoring agent beside it would, and a client's view is measured by the load, which also goes through the
host. Loss and bandwidth apply to all of the member's traffic but loopback, the host's included.
"""

from __future__ import annotations

import abc
import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from durable_chaos.contracts import ContainerState
from durable_chaos.faults.base import BadFault, Fault, Target
from durable_chaos.faults.netns import NotRunning, nettools_image, run_in_netns
from durable_chaos.images import ImageSpec

HOOKS = ("INPUT ! -i lo", "OUTPUT ! -o lo")
# What the evidence reads in a member's namespace, whoever put it there (diagnosis is never told which run did):
# every packet filter, and every root qdisc prefixed with its interface.
FILTER_RULES = "iptables -w -S 2>/dev/null || true"
ROOT_QDISCS = """for d in $(ls /sys/class/net); do [ "$d" = lo ] && continue
tc qdisc show dev "$d" root | sed "s/^/$d: /" || true
done"""
# What `iptables -S` prints for the rules below, as diagnosis reads them back from a member's namespace.
ADDRESS_DROP = re.compile(r"-[sd] (\d+\.\d+\.\d+\.\d+)(?:/32)? -j DROP")
RANDOM_DROP = re.compile(r"--probability ([0-9.]+) -j DROP")


class _NetFault(Fault):
    out_of_service = False  # it still runs and answers its clients, if not its peers

    def images(self) -> list[ImageSpec]:
        return [nettools_image()]

    @abc.abstractmethod
    def _script(self, t: Target, which: str) -> str:
        """The shell script that checks ("check"), injects ("inject"), undoes ("undo") the fault, or counts the
        packets it touched ("count"); its last line of output answers: yes/no, injected/already, removed/absent, N."""

    def _run(self, t: Target, which: str) -> str:
        """Run the inject/undo/check script; the last line of its output is its answer."""
        out = run_in_netns(t.container.id, self._script(t, which), t.tag)
        return (out.strip().splitlines() or [""])[-1]

    def in_effect(self, t: Target) -> bool:
        try:
            return self._run(t, "check") == "yes"
        except NotRunning:  # stopped or restarted by its orchestrator: the rules went with the old namespace
            return False

    def inject(self, t: Target) -> bool:
        return self._run(t, "inject") == "injected"

    def counted(self) -> str:
        """What the number its "count" script prints is."""
        return "packets dropped"

    def evidence_of_effect(self, t: Target) -> str | None:
        """Packets its rules dropped (or its queue held back): rules in place on an idle link, or a rate cap above
        the traffic, have done nothing."""
        try:
            n = int(self._run(t, "count") or 0)
        except (NotRunning, ValueError):
            return None
        return f"{t.service}: {n} {self.counted()}" if n else None

    def undo(self, t: Target) -> bool:
        try:
            return self._run(t, "undo") == "removed"
        except NotRunning:
            return False


class _Filter(_NetFault):
    """Drop rules in the run's own chain."""

    netns_probe = FILTER_RULES

    @abc.abstractmethod
    def rules(self, t: Target) -> list[str]:
        """iptables rule specs appended to the chain."""

    def hooks(self) -> tuple[str, ...]:
        """Where the chain is hooked in (the first is hooked last, so its presence means every rule is in place)."""
        return HOOKS

    def _script(self, t: Target, which: str) -> str:
        chain = f"CHAOS-{t.tag}"
        hooks = self.hooks()
        hooked = f"iptables -w -C {hooks[0]} -j {chain} 2>/dev/null"
        if which == "count":  # the first column of `-L -v -x` is each rule's packet count
            return f"iptables -w -L {chain} -v -x -n 2>/dev/null | awk 'NR > 2 {{n += $1}} END {{print n + 0}}'"
        if which == "check":
            return f"if {hooked}; then echo yes; else echo no; fi"
        if which == "inject":
            # The first hook goes in last: its presence means every rule is in place (the check above reads it).
            lines = [f"if {hooked}; then echo already; exit 0; fi",
                     f"iptables -w -N {chain} 2>/dev/null || iptables -w -F {chain}",
                     *(f"iptables -w -A {chain} {rule}" for rule in self.rules(t)),
                     *(f"iptables -w -C {hook} -j {chain} 2>/dev/null || iptables -w -I {hook} -j {chain}"
                       for hook in hooks[1:]),
                     f"iptables -w -I {hooks[0]} -j {chain}",
                     "echo injected"]
            return "\n".join(lines)
        return "\n".join([
            "found=absent",
            *(f"while iptables -w -D {hook} -j {chain} 2>/dev/null; do found=removed; done" for hook in HOOKS),
            f"if iptables -w -S {chain} >/dev/null 2>&1; then iptables -w -F {chain}; iptables -w -X {chain}; "
            "found=removed; fi",
            "echo $found",
        ])


def _groups(value):
    """`etcd1|etcd2,etcd3` (the command line's form) or a list of lists (JSON)."""
    if isinstance(value, str):
        return [[m.strip() for m in side.split(",") if m.strip()] for side in value.split("|")]
    return value


class PartitionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    groups: list[list[str]] | None = Field(
        default=None, description="two groups of members cut off from each other, e.g. etcd1|etcd2,etcd3; "
                                  "default: the target(s) against every other member")

    _split = field_validator("groups", mode="before")(_groups)


class Partition(_Filter):
    kind = "partition"
    help = "drop traffic between the target and the other members (groups=a|b,c splits two groups instead)"
    Params = PartitionParams
    looks_like = ("partitioned: running and answering its clients, but packet filters in its namespace drop traffic "
                  "to and from its peers' addresses, so it lost its peers or its leadership")
    advice = "Remove the packet filters that cut {who} off from its peers, then confirm it rejoins."

    @classmethod
    def observe(cls, probe_out: list[str]) -> list[str]:
        return [rule for rule in probe_out if ADDRESS_DROP.search(rule)]

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        peers = sorted({m.group(1) for rule in cls.signs_on(c) for m in [ADDRESS_DROP.search(rule)] if m})
        if not peers:
            return None
        return (f"{c.service} is partitioned: packet filters in its namespace drop all traffic to and from "
                f"{', '.join(peers)} (its peers), though it still runs")

    def label(self) -> str:
        groups = self.params.groups
        return "partition" + (f" {' | '.join(','.join(g) for g in groups)}" if groups else "")

    def fixed_targets(self, services: tuple[str, ...]) -> list[str] | None:
        groups = self.params.groups
        if groups is None:
            return None
        if len(groups) != 2 or not all(groups):
            raise BadFault("partition groups: give two non-empty groups, e.g. groups=etcd1|etcd2,etcd3", "params")
        named = [m for g in groups for m in g]
        unknown = [m for m in named if m not in services]
        if unknown:
            raise BadFault(f"partition groups: {', '.join(unknown)} not a member (members: {', '.join(services)})",
                           "params")
        if len(set(named)) != len(named):
            raise BadFault("partition groups: a member is in both groups", "params")
        # The rules go on the smaller side: cutting it from the other side cuts both directions.
        return min(groups, key=len)

    def rules(self, t: Target) -> list[str]:
        groups = self.params.groups
        others = None if groups is None else next(g for g in groups if t.service not in g)
        return [f"{way} {ip} -j DROP" for ip in t.peer_addresses(others) for way in ("-s", "-d")]


class LossParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(default=30.0, gt=0, le=100, description="share of packets dropped, each way")


class Loss(_Filter):
    kind = "loss"
    help = "drop a percentage of the member's packets, in and out"
    Params = LossParams
    looks_like = ("packet loss: running, but a random share of its packets is dropped, so its requests see errors, "
                  "retransmissions and timeouts now and then, and latency goes up")
    advice = "Remove the packet filter dropping {who}'s packets, or find the faulty link."

    @classmethod
    def observe(cls, probe_out: list[str]) -> list[str]:
        return [rule for rule in probe_out if RANDOM_DROP.search(rule)]

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        found = next((m for rule in cls.signs_on(c) for m in [RANDOM_DROP.search(rule)] if m), None)
        if found is None:
            return None
        return (f"{c.service} loses {float(found.group(1)) * 100:.0f}% of its packets: a packet filter in its "
                "namespace drops them at random")

    def label(self) -> str:
        return f"loss {self.params.percent:g}%"

    def rules(self, t: Target) -> list[str]:
        return [f"-m statistic --mode random --probability {self.params.percent / 100:.4f} -j DROP"]


class _Qdisc(_NetFault):
    """A root queueing discipline on every interface but loopback, under the run's own handle."""

    qdisc_kind: ClassVar[str]  # as `tc qdisc show` names it
    effect: ClassVar[str]  # what it does to the member, for its diagnosis finding
    netns_probe = ROOT_QDISCS

    @classmethod
    def observe(cls, probe_out: list[str]) -> list[str]:
        return [rule for rule in probe_out if f" {cls.qdisc_kind} " in f" {rule} "]

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        rule = next(iter(cls.signs_on(c)), None)
        return None if rule is None else f"{c.service}'s {cls.effect}: {rule}"

    @abc.abstractmethod
    def qdisc(self) -> str:
        """The qdisc and its arguments, as `tc qdisc add ... root handle H:` takes them."""

    def counted(self) -> str:
        return f"packets dropped or held back by {self.qdisc_kind}"

    def _script(self, t: Target, which: str) -> str:
        handle = format(int(t.tag[:4], 16) % 0xFFF0 + 1, "x")
        ours = f'tc qdisc show dev "$d" root | grep -q " {handle}: root"'
        if which == "count":  # "(dropped D, overlimits O requeues R)" on the stats line of our root qdisc
            return "\n".join([
                "n=0",
                'for d in $(ls /sys/class/net); do [ "$d" = lo ] && continue',
                f'  s=$(tc -s qdisc show dev "$d" root | grep -A1 " {handle}: root" | '
                "sed -n 's/.*dropped \\([0-9]*\\), overlimits \\([0-9]*\\).*/\\1 \\2/p')",
                '  for v in $s; do n=$((n + v)); done',
                "done",
                "echo $n",
            ])
        act = {
            "check": f"if {ours}; then n=$((n+1)); fi",
            "inject": f"if ! {ours}; then tc qdisc add dev \"$d\" root handle {handle}: {self.qdisc()}; "
                      "n=$((n+1)); fi",
            "undo": f"if {ours}; then tc qdisc del dev \"$d\" root; n=$((n+1)); fi",
        }[which]
        answer = {"check": ("yes", "no"), "inject": ("injected", "already"), "undo": ("removed", "absent")}[which]
        return "\n".join([
            "n=0",
            'for d in $(ls /sys/class/net); do [ "$d" = lo ] && continue',
            act,
            "done",
            f'if [ $n -gt 0 ]; then echo {answer[0]}; else echo {answer[1]}; fi',
        ])


RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit)$")


class BandwidthParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # 256 kbit: below what a member under the default load sends, so the cap slows it (1 mbit was above it: a cap
    # that never bites, never detected).
    rate: str = Field(default="256kbit", description="the cap, in tc's units: 256kbit, 1mbit, 10mbit")

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        if not RATE.match(value.lower()):
            raise ValueError("a rate such as 512kbit, 1mbit or 1gbit")
        return value.lower()


class Bandwidth(_Qdisc):
    kind = "bandwidth"
    help = "cap the member's outgoing rate (tc tbf)"
    Params = BandwidthParams
    looks_like = "bandwidth-capped: running, but a tbf queueing discipline caps its outgoing rate; answers slow down"
    advice = "Remove the rate cap on {who}'s interface, or find what saturates it."
    qdisc_kind = "tbf"
    effect = "outgoing traffic is rate-capped"

    def label(self) -> str:
        return f"bandwidth {self.params.rate}"

    def qdisc(self) -> str:
        # A 32 kbit burst and 400 ms of queue: enough for a steady trickle, short enough that excess is dropped.
        return f"{self.qdisc_kind} rate {self.params.rate} burst 32kbit latency 400ms"
