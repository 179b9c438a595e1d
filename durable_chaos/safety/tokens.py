"""The system's own numbering: what it numbered its writes with (etcd revision, NATS stream sequence, Postgres
txid) never goes back, is never handed out twice, and agrees with what reads report; optionally has no gap."""

from __future__ import annotations

from itertools import pairwise

from durable_chaos.safety.findings import Finding, describe, writes_by_value
from durable_chaos.safety.models import frozen, written
from durable_chaos.safety.op import Op


def tokens(ops: list[Op], token_name: str = "token", gapless: bool = False) -> Finding:
    """Acknowledged writes get distinct tokens that grow in real-time order (a write sent after another one was
    acknowledged gets a higher one); a read reports the token its value was written with. `gapless` (a stream
    only this load writes to): between the lowest and highest acknowledged token, every number was handed out to
    an acknowledged write or could have been to a write of unknown outcome."""
    name = f"{token_name} order"
    writes = [op for op in ops if written(op) is not None and op.outcome == "ok" and op.token is not None]
    if not writes:
        return Finding(name, "unknown", f"no acknowledged write carries a {token_name}")
    owner: dict[int, Op] = {}
    for w in writes:
        if w.token in owner:
            return Finding(name, "violated", f"{token_name} {w.token} acknowledged twice: to "
                                             f"{describe(owner[w.token])} and to {describe(w)}",
                           sorted([owner[w.token], w], key=lambda op: op.invoke_ns))
        owner[w.token] = w
    # Sweep by invoke time, keeping the highest token of the writes already acknowledged by then.
    completed = sorted(writes, key=lambda op: op.complete_ns)
    highest: Op | None = None
    j = 0
    for w in sorted(writes, key=lambda op: op.invoke_ns):
        while j < len(completed) and completed[j].complete_ns < w.invoke_ns:
            if highest is None or completed[j].token > highest.token:
                highest = completed[j]
            j += 1
        if highest is not None and w.token <= highest.token:
            return Finding(name, "violated", f"{token_name} went back: {describe(w)} was sent after "
                                             f"{describe(highest)} was acknowledged", [highest, w])
    by_value = writes_by_value(writes)
    for r in ops:
        if r.kind == "read" and r.outcome == "ok" and r.token is not None and r.value is not None:
            w = by_value.get((r.key, frozen(r.value)))
            if w is not None and w.token != r.token:
                return Finding(name, "violated", f"{describe(r)} reports {token_name} {r.token} for a value "
                                                 f"acknowledged with {w.token}",
                               sorted([w, r], key=lambda op: op.invoke_ns))
    if gapless:
        numbers = sorted(owner)
        holes = [(a, b) for a, b in pairwise(numbers) if b - a > 1]
        missing = sum(b - a - 1 for a, b in holes)
        unknown = sum(1 for op in ops if written(op) is not None and op.outcome == "info")
        if missing > unknown:
            a, b = holes[0]
            return Finding(name, "violated", f"{missing} {token_name}s between {numbers[0]} and {numbers[-1]} were "
                                             f"never acknowledged and only {unknown} writes had an unknown outcome "
                                             f"(first gap after {a}, before {b})", [owner[a], owner[b]])
    return Finding(name, "ok", f"{len(writes)} acknowledged {token_name}s distinct and in order"
                   + (", no gap" if gapless else ""))
