"""Latency, reorder and duplicate without Docker: parameters, the rules they put in a member's namespace, how the
diagnosis reads them back, and the delayer's own schedule and netlink framing."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace

import pytest

from durable_chaos.contracts import ContainerState, Sign
from durable_chaos.faults import BadFault, CATALOG, make_fault, target_choice
from durable_chaos.faults.base import Target
from durable_chaos.faults.delay import STATS, queue_number
from durable_chaos.faults.delayer import delayer
from subjects import get_subject

ADDRESSES = {"etcd1": ["172.20.0.2"], "etcd2": ["172.20.0.3"], "etcd3": ["172.20.0.4"]}


def target(service: str = "etcd2") -> Target:
    return Target(service=service, container=SimpleNamespace(id="c0ffee" * 8), addresses=ADDRESSES, tag="1a2b3c4d")


def test_the_defaults_delay_every_outgoing_packet_by_100_ms():
    f = make_fault("latency")
    assert f.label() == "latency 100ms"
    (rule,) = f.rules(target())
    assert rule.endswith(f"-j NFQUEUE --queue-num {queue_number('1a2b3c4d')} --queue-bypass"), rule
    assert "statistic" not in rule and f.hooks() == ("OUTPUT ! -o lo",)


@pytest.mark.parametrize("params, hooks, ways", [
    ({"direction": "in", "peers": "etcd1"}, ("INPUT ! -i lo",), ["-s 172.20.0.2"]),
    ({"direction": "out", "peers": "etcd1,etcd3"}, ("OUTPUT ! -o lo",), ["-d 172.20.0.2", "-d 172.20.0.4"]),
    ({"direction": "both", "peers": ["etcd3"]}, ("INPUT ! -i lo", "OUTPUT ! -o lo"),
     ["-d 172.20.0.4", "-s 172.20.0.4"]),
])
def test_direction_and_peers_choose_the_hooks_and_addresses(params, hooks, ways):
    f = make_fault("latency", {"delay_ms": 200, **params})
    rules = f.rules(target())
    assert f.hooks() == hooks
    assert sorted(r.split(" -m ")[0] for r in rules) == sorted(ways)


def test_a_share_of_packets_is_picked_at_random_by_iptables():
    (rule,) = make_fault("latency", {"delay_ms": 50, "percent": 30}).rules(target())
    assert "-m statistic --mode random --probability 0.3000" in rule


@pytest.mark.parametrize("kind, params, says", [
    ("latency", {"delay_ms": -5}, "delay_ms=-5 is invalid"),
    ("latency", {"delay_ms": 0}, "delay_ms=0 is invalid"),
    ("latency", {"percent": 150}, "percent=150 is invalid"),
    ("latency", {"direction": "sideways"}, "direction=sideways is invalid"),
    ("reorder", {"percent": 100}, "percent=100 is invalid"),
    ("duplicate", {"percent": 0}, "percent=0 is invalid"),
    ("duplicate", {"direction": "in"}, "has no parameter 'direction'"),
])
def test_out_of_range_parameters_are_one_line(kind, params, says):
    with pytest.raises(BadFault) as err:
        make_fault(kind, params)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_peer_that_is_no_member_is_refused_before_anything_runs():
    with pytest.raises(BadFault, match="peers nosuch not a member"):
        target_choice(get_subject("etcd"), make_fault("latency", {"peers": "nosuch"}), "etcd2", 1, False, None)
    assert make_fault("latency", {"peers": "etcd2"}).refuse([target("etcd2")]) is not None  # its own peer
    assert make_fault("latency", {"peers": "etcd1"}).refuse([target("etcd2")]) is None


def test_each_kind_reads_only_its_own_rule_back_from_a_namespace():
    rules = {kind: f"-A CHAOS-1a2b3c4d {make_fault(kind).rules(target())[0]}".replace('"', '')
             for kind in ("latency", "reorder", "duplicate")}
    for kind, rule in rules.items():
        assert CATALOG[kind].observe(list(rules.values())) == [rule]
        found = CATALOG[kind].seen_on(ContainerState(service="etcd2", container="x", running=True, status="running",
                                                     signs=[Sign(kind=kind, detail=rule)]))
        assert found.startswith("etcd2's packets go through a delay queue in its namespace"), found


def test_the_delayer_releases_each_packet_within_delay_and_jitter_never_early():
    s = delayer.Schedule(200, 30, random.Random(7))
    holds = [s.release_at(10.0) - 10.0 for _ in range(2000)]
    assert all(0.170 <= h <= 0.230 for h in holds)
    assert max(holds) - min(holds) > 0.05  # jitter really varies the hold
    assert delayer.Schedule(5, 50, random.Random(1)).release_at(3.0) >= 3.0  # jitter past the delay: not before


def test_jitter_larger_than_the_gap_between_packets_reorders_them():
    s = delayer.Schedule(100, 40, random.Random(3))
    released = sorted(range(200), key=lambda i: s.release_at(i * 0.001))  # a packet a millisecond
    assert released != list(range(200))


def test_the_delayers_netlink_framing_round_trips():
    # A packet message as the kernel sends it: nlmsghdr, nfgenmsg, then NFQA_PACKET_HDR (id 42) and a payload.
    attrs = (delayer._attr(delayer.NFQA_PACKET_HDR, struct.pack(">IHB", 42, 0x0800, 3))
             + delayer._attr(delayer.NFQA_PAYLOAD, b"\x45" + b"\0" * 19))
    msg = delayer._message(delayer.NFQNL_MSG_PACKET, 7, attrs, seq=1)
    (msg_type, payload), = delayer.messages(msg + msg[:3])  # a torn tail is ignored
    assert msg_type == (delayer.NFNL_SUBSYS_QUEUE << 8) | delayer.NFQNL_MSG_PACKET
    parsed = delayer._attrs(payload[4:])
    assert struct.unpack_from(">I", parsed[delayer.NFQA_PACKET_HDR])[0] == 42
    assert struct.unpack_from(">H", payload, 2)[0] == 7  # the queue number, big-endian in the nfgenmsg


def test_the_stats_line_the_evidence_reads_is_the_one_the_delayer_prints():
    stats = delayer.Stats()
    for held in (0.2, 0.21, 0.19):
        stats.released(held)
    found = STATS.search(stats.line())
    assert found and found.group(1) == "3" and float(found.group(2)) == pytest.approx(200.0, abs=0.1)
