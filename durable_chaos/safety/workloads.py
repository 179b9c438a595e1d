"""What the load asks of a subject, per data model: the next operation of a window, given what came back before.

A workload is made for one load window (`factory(keys, start_ns)`) and asked for its operations in order
(`next(rng, seq, client) -> (f, key, value)`); `observe(op)` tells it each answer. Values written are unique in the
run: a window's `start_ns` grows from window to window and is part of every value, so a read names the one write
it saw, which keeps the checkers' searches small.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from durable_chaos.safety.models import written
from durable_chaos.safety.op import Op

WRITE_SHARE = 0.5
CAS_SHARE = 0.4  # of a cas-register's operations; the rest are half reads, half writes
# Of a queue's operations; the rest are publishes. A fetch takes a batch, so the consumer keeps up with the
# publishers and most messages are delivered during the run, not only found by the final drain.
FETCH_SHARE = 0.2


class Workload(Protocol):
    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]: ...

    def observe(self, op: Op) -> None: ...


def window_tag(start_ns: int) -> str:
    return f"{start_ns // 1_000_000 % 10**8:08d}"


class Stateless:
    """A workload whose next operation does not depend on earlier answers."""

    def observe(self, op: Op) -> None:
        pass


class Registers(Stateless):
    """Reads and writes of single keys."""

    def __init__(self, keys: tuple[str, ...], start_ns: int):
        self.keys, self.tag = keys, window_tag(start_ns)

    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]:
        key = rng.choice(self.keys)
        return ("write", key, f"{self.tag}-{seq}") if rng.random() < WRITE_SHARE else ("read", key, None)

class CasRegisters(Registers):
    """Reads, writes and compare-and-sets. A cas expects what this load last saw the key hold, so most of them
    can succeed; how a lock or a lease is taken on a real system."""

    def __init__(self, keys: tuple[str, ...], start_ns: int):
        super().__init__(keys, start_ns)
        self.last_seen: dict[str, Any] = {}

    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]:
        key = rng.choice(self.keys)
        roll = rng.random()
        if roll < CAS_SHARE and key in self.last_seen:
            return "cas", key, [self.last_seen[key], f"{self.tag}-{seq}"]
        # Before the key was seen, what would have been a cas is a write: it gives the next cas something to expect.
        if roll < CAS_SHARE + (1 - CAS_SHARE) * WRITE_SHARE:
            return "write", key, f"{self.tag}-{seq}"
        return "read", key, None

    def observe(self, op: Op) -> None:
        if op.outcome != "ok":
            return
        if op.kind == "read" and op.value is not None:
            self.last_seen[op.key] = op.value
        elif written(op) is not None:
            self.last_seen[op.key] = op.value if op.kind == "write" else op.value[1]


class ListAppend(Stateless):
    """Transactions of 1-4 micro-operations, each an append of a unique integer to a key or a read of a key, over a
    few keys at a time (safety/list_append.py checks them). The keys in use move on every `KEY_EPOCH_S` seconds
    by half of `ACTIVE_KEYS`: a key's list grows only while it is in use (every read returns the whole list), and
    neighbouring epochs share keys, so transactions on either side of a boundary still meet."""

    ACTIVE_KEYS = 8
    KEY_EPOCH_S = 10
    MAX_MICRO_OPS = 4
    APPEND_SHARE = 0.5

    def __init__(self, keys: tuple[str, ...], start_ns: int):
        epoch = start_ns // (self.KEY_EPOCH_S * 10**9)
        first = epoch * self.ACTIVE_KEYS // 2
        self.keys = tuple(keys[(first + i) % len(keys)] for i in range(min(self.ACTIVE_KEYS, len(keys))))
        # Unique in the run: the window's start in ms (as the registers' tag), then the operation and its place.
        self.base = int(window_tag(start_ns)) * 10**6

    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]:
        micro = []
        for i in range(rng.randint(1, self.MAX_MICRO_OPS)):
            key = rng.choice(self.keys)
            micro.append(["append", key, self.base + seq * self.MAX_MICRO_OPS + i] if rng.random() < self.APPEND_SHARE
                         else ["r", key, None])
        return "txn", None, micro

class Queue(Stateless):
    """Publishes and fetches of one log. Each load client is a publisher; its counter `n` grows across windows (a
    window starts after the previous one's last operation was due, more nanoseconds later than it had operations),
    so the log's order of one client's messages can be checked against the order it sent them. A message id starts
    with the run's name (its keys' first part), so a subject can keep each run's messages apart; a window starts
    with a publish, so a session has seen that name before it is asked to fetch."""

    def __init__(self, keys: tuple[str, ...], start_ns: int):
        self.run = keys[0].split("-", 1)[0] if keys else "load"
        self.start_ns, self.tag = start_ns, window_tag(start_ns)

    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]:
        if seq > 0 and rng.random() < FETCH_SHARE:
            return "fetch", None, None
        return "publish", None, {"id": f"{self.run}-{self.tag}-{seq}", "publisher": client, "n": self.start_ns + seq}

WORKLOADS: dict[str, Callable[[tuple[str, ...], int], Workload]] = {
    "register": Registers,
    "cas-register": CasRegisters,
    "list-append": ListAppend,
    "queue": Queue,
}
