"""chaos-delayer: hold each packet iptables queues to NFQUEUE `--queue` for `--delay-ms` ± `--jitter-ms`, then let
it go; optionally send a share of them twice (`--duplicate-percent`).

Why it speaks netfilter's netlink protocol itself: the library made for this (PyPI's NetfilterQueue) is a C
extension that needs a compiler and libnetfilter_queue's headers in the image, and its callback model returns one
verdict per packet in arrival order. What we need is four messages (bind the queue, set the copy mode and the
fail-open flag, read a packet's id, give a verdict by id, in any order) and a heap of release times: about a
hundred lines of the standard library, in an image that holds only Debian's python3.

Fail-open twice over: the iptables rule has `--queue-bypass` (no program bound: packets pass), and the queue has
the FAIL_OPEN flag (queue full: packets pass). Killing this program therefore stops the delay at once; it never
turns into a partition. It prints what it did once a second (packets held, the mean and largest hold), which the
fault reads back from the container's log as evidence that it took effect.

Standard library only, Python 3.9+: it runs in the helper image, not in the runner.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_PAYLOAD = 1, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META, NFQNL_COPY_PACKET = 1, 2
NFQA_CFG_F_FAIL_OPEN = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
# Marks the copies `--duplicate-percent` sends, so the queue's rule lets them through instead of queueing them.
COPY_MARK = 0x43484153


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(msg_type: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    # nlmsghdr (host order) + nfgenmsg (family, version 0, the queue number big-endian) + attributes
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def _attrs(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & 0x7FFF] = data[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def messages(data: bytes):
    """(type, payload after the nfgenmsg header) for every netlink message in one read."""
    i = 0
    while i + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, i)
        if length < 16:
            break
        yield msg_type, data[i + 16:i + length]
        i += (length + 3) & ~3


class Queue:
    """One NFQUEUE, bound in this network namespace."""

    def __init__(self, number: int, copy_packets: bool, maxlen: int = 4096):
        self.number = number
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)))
        mode = NFQNL_COPY_PACKET if copy_packets else NFQNL_COPY_META
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0xFFFF, mode))
                     + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))
                     + _attr(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_FAIL_OPEN))
                     + _attr(NFQA_CFG_FLAGS, struct.pack(">I", NFQA_CFG_F_FAIL_OPEN)))

    def _config(self, attrs: bytes) -> None:
        self.seq += 1
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.number, attrs, self.seq, NLM_F_REQUEST | NLM_F_ACK))
        for msg_type, payload in messages(self.sock.recv(65536)):
            if msg_type == NLMSG_ERROR and len(payload) >= 4:
                (errno,) = struct.unpack_from("=i", payload)  # nlmsgerr.error: 0 is the ack, -errno a refusal
                if errno:
                    raise OSError(-errno, f"binding NFQUEUE {self.number}: {os.strerror(-errno)}")

    def packets(self):
        """(packet id, payload or b"") for every packet in one read."""
        data = self.sock.recv(1 << 18)
        for msg_type, payload in messages(data):
            if msg_type != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            attrs = _attrs(payload[4:])  # past the nfgenmsg
            header = attrs.get(NFQA_PACKET_HDR)
            if header:
                yield struct.unpack_from(">I", header)[0], attrs.get(NFQA_PAYLOAD, b"")

    def accept(self, packet_id: int) -> None:
        self.seq += 1
        self.sock.send(_message(NFQNL_MSG_VERDICT, self.number,
                                _attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id)), self.seq))


class Schedule:
    """When each packet goes: `delay_ms` ± `jitter_ms` (uniform) after it arrived, never before it arrived. Jitter
    larger than the gap between two packets lets the later one pass the earlier: reordering, as on a real link."""

    def __init__(self, delay_ms: float, jitter_ms: float, rng: random.Random):
        self.delay, self.jitter, self.rng = delay_ms / 1000, jitter_ms / 1000, rng

    def release_at(self, arrived: float) -> float:
        return arrived + max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))


class Stats:
    def __init__(self):
        self.held = self.duplicated = 0
        self.total_s = self.max_s = 0.0

    def released(self, held_s: float) -> None:
        self.held += 1
        self.total_s += held_s
        self.max_s = max(self.max_s, held_s)

    def line(self) -> str:
        mean = 1000 * self.total_s / self.held if self.held else 0.0
        return (f"held {self.held} packets, mean {mean:.1f} ms, max {1000 * self.max_s:.1f} ms, "
                f"duplicated {self.duplicated}")


def run(args: argparse.Namespace) -> None:
    rng = random.Random()
    queue = Queue(args.queue, copy_packets=args.duplicate_percent > 0)
    raw = None
    if args.duplicate_percent > 0:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, COPY_MARK)
    schedule, stats = Schedule(args.delay_ms, args.jitter_ms, rng), Stats()
    pending: list[tuple[float, int, float, bytes]] = []  # (release at, id, arrived at, payload to copy)
    print(f"bound NFQUEUE {args.queue}: delay {args.delay_ms:g} ms ± {args.jitter_ms:g} ms, "
          f"duplicate {args.duplicate_percent:g}%", flush=True)
    next_report = time.monotonic() + 1
    while True:
        now = time.monotonic()
        wait = min(next_report, pending[0][0] if pending else next_report) - now
        ready, _, _ = select.select([queue.sock], [], [], max(0.0, wait))
        if ready:
            now = time.monotonic()
            for packet_id, payload in queue.packets():
                copy = payload if raw is not None and rng.random() * 100 < args.duplicate_percent else b""
                heapq.heappush(pending, (schedule.release_at(now), packet_id, now, copy))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, packet_id, arrived, copy = heapq.heappop(pending)
            queue.accept(packet_id)
            stats.released(now - arrived)
            if copy and len(copy) >= 20:
                try:
                    raw.sendto(copy, (socket.inet_ntoa(copy[16:20]), 0))
                    stats.duplicated += 1
                except OSError:
                    pass  # a copy that cannot be sent is a packet not duplicated, nothing worse
        if now >= next_report:
            print(stats.line(), flush=True)
            next_report = now + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chaos-delayer", description=__doc__.split("\n\n")[0])
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--duplicate-percent", type=float, default=0.0)
    args = p.parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        return 0
    except OSError as err:
        print(f"chaos-delayer: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
