"""Lost writes: every acknowledged write (or swap) is visible in the final read unless a later one replaced it."""

from __future__ import annotations

from collections import defaultdict

from durable_chaos.safety.findings import INFINITY, Finding, describe, writes_by_value
from durable_chaos.safety.models import frozen, written
from durable_chaos.safety.op import Op


def lost_writes(ops: list[Op]) -> Finding:
    name = "lost writes"
    final = {op.key: op for op in ops if op.final and op.kind == "read"}
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if written(op) is not None and not op.final:
            writes[op.key].append(op)
    by_value = writes_by_value(ops)
    lost: list[tuple[Op, list[Op]]] = []  # (the lost write, the ops that show it)
    unread: list[str] = []
    for key, ws in writes.items():
        acked = [w for w in ws if w.outcome == "ok"]
        if not acked:
            continue
        read = final.get(key)
        if read is None or read.outcome != "ok":
            unread.append(key)
            continue
        if read.value is None:  # the key holds nothing: every acknowledged write to it is gone
            lost += [(w, [w, read]) for w in acked]
            continue
        seen = by_value.get((key, frozen(read.value)))
        if seen is None or seen.outcome == "fail":
            # A value nobody wrote (or that the system said it refused) replaced the acknowledged ones.
            lost += [(w, [w, read]) for w in acked]
            continue
        # `w` is lost when the write the final read shows certainly came before it: it completed before `w` was
        # invoked, so `w` (or something later) should be what is left. An info write may land any time: never.
        cutoff = seen.complete_ns if seen.outcome == "ok" else INFINITY
        lost += [(w, [seen, w, read]) for w in acked if w is not seen and cutoff < w.invoke_ns]
    if lost:
        lost.sort(key=lambda item: item[0].invoke_ns)
        first, shown = lost[0]
        read = shown[-1]
        why = (f"the final read of {first.key} found {'nothing' if read.value is None else repr(read.value)}"
               + (f", written by {describe(shown[0])} which completed before it was sent" if len(shown) == 3 else ""))
        return Finding(name, "violated", f"{len(lost)} acknowledged writes lost; first: {describe(first)}: {why}",
                       sorted(shown, key=lambda op: op.invoke_ns), count=len(lost))
    if unread:
        return Finding(name, "unknown", f"the final read failed for {len(unread)} of {len(writes)} keys written "
                                        f"(e.g. {unread[0]}): their writes cannot be checked")
    acked = sum(1 for ws in writes.values() for w in ws if w.outcome == "ok")
    return Finding(name, "ok", f"all {acked} acknowledged writes to {len(writes)} keys survive or were replaced")
