"""What the load asks of a subject, per data model: the next operation of a window, given what came back before.

A workload is made for one load window (`factory(keys, start_ns)`) and asked for its operations in order
(`next(rng, seq, client) -> (f, key, value)`); `observe(op)` tells it each answer. Values written are unique in the
run: a window's `start_ns` grows from window to window and is part of every value.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from durable_chaos.safety.history import Op

# Of a queue's operations; the rest are publishes. A fetch takes a batch, so the consumer keeps up with the
# publishers and most messages are delivered during the run, not only found by the final drain.
FETCH_SHARE = 0.2


class Workload(Protocol):
    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]: ...

    def observe(self, op: Op) -> None: ...


class Queue:
    """Publishes and fetches of one stream. Each load client is a publisher; its counter `n` grows across windows
    (a window starts after the previous one's last operation was due, more nanoseconds later than it had
    operations), so the stream's order of one client's messages can be checked against the order it sent them."""

    def __init__(self, keys: tuple[str, ...], start_ns: int):
        self.start_ns = start_ns
        self.tag = f"{start_ns // 1_000_000 % 10**8:08d}"

    def next(self, rng: random.Random, seq: int, client: int) -> tuple[str, str | None, Any]:
        if rng.random() < FETCH_SHARE:
            return "fetch", None, None
        return "publish", None, {"id": f"{self.tag}-{seq}", "publisher": client, "n": self.start_ns + seq}

    def observe(self, op: Op) -> None:
        pass


WORKLOADS: dict[str, Callable[[tuple[str, ...], int], Workload]] = {
    "queue": Queue,
}
