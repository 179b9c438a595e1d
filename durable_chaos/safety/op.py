"""One client operation as the client saw it: what it asked, when, and what came back.

A plain dataclass, not a pydantic model: a minute of load is thousands of them, and building 6000 from JSON takes
6 ms as dataclasses and 21 ms as validated models (measured), about what every checker together takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["ok", "fail", "info"]  # fail: certainly not applied; info: unknown (e.g. a timeout)


@dataclass(slots=True)
class Op:
    # Jepsen's `f`: read, write, cas (registers); publish, fetch, drain (a queue); txn (list-append); "op": a
    # subject's own load operation that says nothing about data.
    kind: str
    outcome: Outcome
    invoke_ns: int  # when the load generator meant to send it (open loop); ours are epoch nanoseconds
    complete_ns: int  # when the answer (or the timeout) came; for info ops the truth may land any time later
    key: str | None = None
    # ok: the completion's value (what a read returned); fail/info: the invoke's (what was asked). Any JSON value:
    # a register's string, a cas's [expected, new], a transaction's micro-operations.
    value: Any = None
    process: int = 0  # the load client slot, which a session uses to pick (and fail over between) members
    token: int | None = None  # what the system returned: etcd revision, NATS stream sequence, Postgres txid
    error: str | None = None
    final: bool = False  # an operation of the final phase, after restore (final reads, the drain)
    capped: bool = False  # not sent: the concurrency cap was hit at its scheduled time (outcome fail)

    @property
    def served(self) -> bool:
        """The system answered it: `ok`, or a `fail` with no error, which is the system's answer no (a
        compare-and-set that found another value). Every other outcome counts as an error of availability."""
        return self.outcome == "ok" or self.outcome == "fail" and self.error is None and not self.capped

    @property
    def latency_ms(self) -> float:
        return (self.complete_ns - self.invoke_ns) / 1e6
