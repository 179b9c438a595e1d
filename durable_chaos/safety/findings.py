"""What every checker returns, and what they share: how an operation is worded, which write wrote a value.

A `fail` operation certainly did not take effect; an `info` one (a timeout, a dropped connection) may have, at any
moment after its invoke. Values written are unique per run, which keeps the search small and makes "which write
did this read see" a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from durable_chaos.safety.history import Op

INFINITY = float("inf")


@dataclass
class Finding:
    name: str
    verdict: str  # ok / violated / unknown
    detail: str
    ops: list[Op] = field(default_factory=list)  # the counterexample, when violated
    count: int = 0  # lost writes (lost_writes only)


def describe(op: Op) -> str:
    """One operation in a sentence's words: "write k1=v7 (ok, revision 12)"."""
    what = f"{op.kind} {op.key}" + (f"={op.value}" if op.kind == "write" else
                                    f" -> {op.value if op.value is not None else 'nothing'}" if op.kind == "read"
                                    else "")
    extra = f", token {op.token}" if op.token is not None else ""
    return f"{'final ' if op.final else ''}{what} ({op.outcome}{extra})"



def writes_by_value(ops: list[Op]) -> dict[tuple[str, str], Op]:
    return {(op.key, op.value): op for op in ops if op.kind == "write" and op.value is not None}
