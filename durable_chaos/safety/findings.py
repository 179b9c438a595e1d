"""What every checker returns, and what they share: how an operation is worded, which write wrote a value.

A `fail` operation certainly did not take effect; an `info` one (a timeout, a dropped connection) may have, at any
moment after its invoke. Values written are unique per run, which keeps the search small and makes "which write
did this read see" a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durable_chaos.safety.models import written
from durable_chaos.safety.op import Op

INFINITY = float("inf")


@dataclass
class Finding:
    name: str
    verdict: str  # ok / violated / unknown
    detail: str
    ops: list[Op] = field(default_factory=list)  # the counterexample, when violated
    count: int = 0  # how many instances (lost writes, lost messages...)
    stuck: Op | None = None  # the operation no legal order can place: the marked point of the timeline
    # A transaction cycle: (from, to, dependency "ww"/"wr"/"rw"/"rt", why in plain words), drawn as a cycle.
    cycle: list[tuple[Op, Op, str, str]] = field(default_factory=list)
    anomaly: str | None = None  # its name: G0, G1c, G-single, lost update...


def describe(op: Op) -> str:
    """One operation in a sentence's words: "write k1=v7 (ok, revision 12)", "cas k1 from v7 to v9 (fail)"."""
    key = "" if op.key is None else f" {op.key}"
    if op.kind == "write":
        what = f"write{key}={op.value}"
    elif op.kind == "read":
        what = f"read{key} -> {op.value if op.value is not None else 'nothing'}"
    elif op.kind == "cas" and isinstance(op.value, list) and len(op.value) == 2:
        what = f"cas{key} from {op.value[0]} to {op.value[1]}"
    else:
        what = f"{op.kind}{key}" + ("" if op.value is None else f" {_short(op.value)}")
    extra = f", token {op.token}" if op.token is not None else ""
    return f"{'final ' if op.final else ''}{what} ({op.outcome}{extra})"



def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def writes_by_value(ops: list[Op]) -> dict[tuple[str | None, Any], Op]:
    """(key, value written) -> the write or cas that wrote it (values are unique per run)."""
    return {(op.key, written(op)): op for op in ops if written(op) is not None}
