"""Checkers: pure functions on an operation history that say whether the system lost or invented data.

- `lost_writes`: every acknowledged write is visible in the final read unless a later write replaced it.
- `linearizable`: per key, the register operations can be ordered as if one at a time, each between its invoke and
  its answer (Wing & Gong's search with memoisation, as in Lowe's and Porcupine's checkers).
- `tokens`: what the system numbered its writes with (etcd revision, NATS stream sequence, Postgres txid) never
  goes back, is never handed out twice, and agrees with what reads report; optionally has no gap.
- `availability`: the longest time without a successful operation, the error rate, latency per fault phase.

A `fail` operation certainly did not take effect; an `info` one (a timeout, a dropped connection) may have, at any
moment after its invoke. Values written are unique per run, which keeps the search small and makes "which write
did this read see" a lookup.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise

from durable_chaos.contracts import Availability, Counterexample, OpView, PhaseLatency, SafetyCheck, SafetyReport
from durable_chaos.safety.history import Op

INFINITY = float("inf")
# Search steps per key before the linearizability checker gives up on that key (verdict unknown, never a guess).
SEARCH_BUDGET = 2_000_000
COUNTEREXAMPLE_OPS = 8


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


def _writes_by_value(ops: list[Op]) -> dict[tuple[str, str], Op]:
    return {(op.key, op.value): op for op in ops if op.kind == "write" and op.value is not None}


# -- lost writes -----------------------------------------------------------------------------------------------


def lost_writes(ops: list[Op]) -> Finding:
    name = "lost writes"
    final = {op.key: op for op in ops if op.final and op.kind == "read"}
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "write" and not op.final:
            writes[op.key].append(op)
    by_value = _writes_by_value(ops)
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
        seen = by_value.get((key, read.value))
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


# -- per-key linearizability of a register ---------------------------------------------------------------------


class _Node:
    """One call or return event in the doubly linked list the search lifts operations out of."""

    __slots__ = ("index", "match", "next", "op", "prev")

    def __init__(self, op: Op | None, index: int):
        self.op, self.index = op, index
        self.match: _Node | None = None  # a call's return event (None on a return)
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _step(state: str | None, op: Op) -> tuple[bool, str | None]:
    """The register: a write sets the value, a read must return it."""
    if op.kind == "write":
        return True, op.value
    return op.value == state, state


def _search(ops: list[Op], budget: int) -> tuple[bool | None, Op | None]:
    """Wing & Gong's search: (True, None) if linearizable, (False, the op at which the longest attempt got stuck),
    (None, None) if the budget ran out.

    Events are in time order; at each call event try to linearize that op now (its effect is legal in the current
    state): lift it out of the list and start again from the front. Meeting a return event means its op should
    already have been linearized: backtrack. (set of linearized ops, state) pairs already tried are memoised, which
    is what makes the search practical (Lowe, "Testing for linearizability", 2017)."""
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke_ns, 0, i))
        # An info op may take effect at any moment after its invoke: its return is at the end of time.
        events.append((INFINITY if op.outcome == "info" else op.complete_ns, 1, i))
    events.sort()  # at equal times calls first: touching operations count as concurrent (never a false alarm)
    head = _Node(None, -1)
    calls: dict[int, _Node] = {}
    prev = head
    for _, is_return, i in events:
        node = _Node(ops[i], i)
        if is_return:
            calls[i].match = node
        else:
            calls[i] = node
        prev.next, node.prev = node, prev
        prev = node

    def lift(call: _Node) -> None:
        call.prev.next = call.next
        if call.next:
            call.next.prev = call.prev
        ret = call.match
        ret.prev.next = ret.next
        if ret.next:
            ret.next.prev = ret.prev

    def unlift(call: _Node) -> None:
        ret = call.match
        ret.prev.next = ret
        if ret.next:
            ret.next.prev = ret
        call.prev.next = call
        if call.next:
            call.next.prev = call

    state: str | None = None
    linearized = 0  # bit i set: ops[i] is linearized
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[_Node, str | None]] = []
    stuck: tuple[int, Op | None] = (-1, None)
    node = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            return None, None
        if node.match is not None:  # a call: can its op take effect now?
            legal, new_state = _step(state, node.op)
            if legal:
                bits = linearized | (1 << node.index)
                if (bits, new_state) not in seen:
                    seen.add((bits, new_state))
                    stack.append((node, state))
                    state, linearized = new_state, bits
                    lift(node)
                    node = head.next
                    continue
            node = node.next
        else:  # a return whose op was not linearized before it: undo the latest choice
            if len(stack) > stuck[0]:
                stuck = (len(stack), node.op)
            if not stack:
                return False, stuck[1]
            call, state = stack.pop()
            linearized &= ~(1 << call.index)
            unlift(call)
            node = call.next
    return True, None


def _context(key_ops: list[Op], stuck: Op) -> list[Op]:
    """The ops that explain why `stuck` cannot be placed: the writes that completed last before it was sent, and
    every op that overlaps it."""
    end = INFINITY if stuck.outcome == "info" else stuck.complete_ns
    before = [op for op in key_ops if op.kind == "write" and op.outcome == "ok" and op.complete_ns < stuck.invoke_ns]
    overlapping = [op for op in key_ops if op is not stuck and op.invoke_ns <= end
                   and (op.outcome == "info" or op.complete_ns >= stuck.invoke_ns)]
    chosen = {id(op): op for op in before[-2:] + overlapping[:COUNTEREXAMPLE_OPS - 3] + [stuck]}
    return sorted(chosen.values(), key=lambda op: op.invoke_ns)


def linearizable(ops: list[Op], budget: int = SEARCH_BUDGET) -> Finding:
    name = "linearizability"
    by_key: dict[str, list[Op]] = defaultdict(list)
    observed: set[tuple[str, str]] = set()
    for op in ops:
        if op.kind == "read" and op.outcome == "ok" and op.value is not None:
            observed.add((op.key, op.value))
    for op in ops:
        if op.kind == "read" and op.outcome == "ok":
            by_key[op.key].append(op)
        elif op.kind == "write" and (op.outcome == "ok" or (op.outcome == "info" and (op.key, op.value) in observed)):
            # A failed write never happened, a failed read says nothing. An info write nobody ever read may as well
            # not have happened (always a legal choice): leaving it out keeps the search from branching on it.
            by_key[op.key].append(op)
    undecided = []
    for key in sorted(by_key, key=lambda k: by_key[k][0].invoke_ns):
        key_ops = by_key[key]
        verdict, stuck = _search(key_ops, budget)
        if verdict is False:
            context = _context(key_ops, stuck)
            return Finding(name, "violated", f"key {key}: no order of its operations explains {describe(stuck)} "
                                             f"(e.g. a stale read, or a value that came back)", context)
        if verdict is None:
            undecided.append(key)
    if undecided:
        return Finding(name, "unknown", f"search budget ({budget} steps) exhausted on {len(undecided)} keys "
                                        f"(e.g. {undecided[0]}); the other {len(by_key) - len(undecided)} are "
                                        f"linearizable")
    return Finding(name, "ok", f"every one of {len(by_key)} keys behaves as a linearizable register "
                               f"({sum(len(v) for v in by_key.values())} operations)")


# -- the system's own numbering ----------------------------------------------------------------------------------


def tokens(ops: list[Op], token_name: str = "token", gapless: bool = False) -> Finding:
    """Acknowledged writes get distinct tokens that grow in real-time order (a write sent after another one was
    acknowledged gets a higher one); a read reports the token its value was written with. `gapless` (a stream
    only this load writes to): between the lowest and highest acknowledged token, every number was handed out to
    an acknowledged write or could have been to a write of unknown outcome."""
    name = f"{token_name} order"
    writes = [op for op in ops if op.kind == "write" and op.outcome == "ok" and op.token is not None]
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
    by_value = _writes_by_value(writes)
    for r in ops:
        if r.kind == "read" and r.outcome == "ok" and r.token is not None and r.value is not None:
            w = by_value.get((r.key, r.value))
            if w is not None and w.token != r.token:
                return Finding(name, "violated", f"{describe(r)} reports {token_name} {r.token} for a value "
                                                 f"acknowledged with {w.token}", sorted([w, r], key=lambda op: op.invoke_ns))
    if gapless:
        numbers = sorted(owner)
        holes = [(a, b) for a, b in pairwise(numbers) if b - a > 1]
        missing = sum(b - a - 1 for a, b in holes)
        unknown = sum(1 for op in ops if op.kind == "write" and op.outcome == "info")
        if missing > unknown:
            a, b = holes[0]
            return Finding(name, "violated", f"{missing} {token_name}s between {numbers[0]} and {numbers[-1]} were "
                                             f"never acknowledged and only {unknown} writes had an unknown outcome "
                                             f"(first gap after {a}, before {b})", [owner[a], owner[b]])
    return Finding(name, "ok", f"{len(writes)} acknowledged {token_name}s distinct and in order"
                   + (", no gap" if gapless else ""))


# -- availability ----------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: int) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return round(sorted_values[0], 2)
    return round(statistics.quantiles(sorted_values, n=100, method="inclusive")[q - 1], 2)


def _phase(ops: list[Op]) -> PhaseLatency:
    latencies = sorted(op.latency_ms for op in ops if not op.capped)
    return PhaseLatency(ops=len(ops), errors=sum(1 for op in ops if op.outcome != "ok"),
                        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99))


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def ns(at: datetime | None) -> int | None:
    """A report's moment on the history's clock (epoch nanoseconds)."""
    return None if at is None else int(at.timestamp() * 1e9)


def availability(ops: list[Op], fault_start_ns: int | None = None, fault_end_ns: int | None = None) -> Availability:
    sent = [op for op in ops if not op.final]
    if not sent:
        return Availability()
    # The gaps between successful answers, from the first op due to the last answer.
    marks = [min(op.invoke_ns for op in sent)] + sorted(op.complete_ns for op in sent if op.outcome == "ok")
    marks.append(max(marks[-1], max(op.complete_ns for op in sent)))
    gap, gap_from = max((b - a, a) for a, b in pairwise(marks))
    start = INFINITY if fault_start_ns is None else fault_start_ns
    end = INFINITY if fault_end_ns is None else fault_end_ns
    return Availability(
        longest_gap_ms=round(gap / 1e6, 1), longest_gap_from=_at(gap_from),
        error_rate=round(sum(1 for op in sent if op.outcome != "ok") / len(sent), 4),
        capped=sum(1 for op in sent if op.capped),
        before=_phase([op for op in sent if op.invoke_ns < start]),
        during=_phase([op for op in sent if start <= op.invoke_ns < end]),
        after=_phase([op for op in sent if op.invoke_ns >= end]),
    )


# -- everything together ---------------------------------------------------------------------------------------


def view(op: Op) -> OpView:
    return OpView(kind=op.kind, key=op.key, value=op.value, outcome=op.outcome, invoked_at=_at(op.invoke_ns),
                  latency_ms=round(op.latency_ms, 2), token=op.token, error=op.error, final=op.final)


def check(ops: list[Op], *, token_name: str | None = None, gapless: bool = False, fault_start_ns: int | None = None,
          fault_end_ns: int | None = None, unknown_because: list[str] | None = None) -> SafetyReport:
    """Every checker on one history. `token_name`: what the subject's tokens are (None: it returns none).
    `unknown_because`: what the caller already knows makes the data checks unsound (e.g. missing history parts);
    the checkers still run and say what they saw, but the verdict is `unknown` either way."""
    began = time.perf_counter()
    data_ops = [op for op in ops if op.kind in ("read", "write")]
    sent = [op for op in ops if not op.final]
    reasons = list(unknown_because or [])
    findings: list[Finding] = []
    if not data_ops:
        reasons.append("the subject's load has no read/write operations: only availability is measured"
                       if sent else "no operations were recorded")
    else:
        findings = [lost_writes(ops), linearizable(ops)]
        if token_name is not None:
            findings.append(tokens(ops, token_name, gapless))
    violated = [f for f in findings if f.verdict == "violated"]
    reasons += [f"{f.name}: {f.detail}" for f in findings if f.verdict != "ok"]
    # A history known to be incomplete (a lost window's operations may have landed) explains any violation the
    # checkers find in it: it cannot prove data was lost, so it says unknown, with what the checkers saw.
    verdict = "unknown" if unknown_because else "violated" if violated else "unknown" if reasons else "ok"
    lost = next((f for f in findings if f.name == "lost writes"), None)
    first = violated[0] if violated else None
    return SafetyReport(
        verdict=verdict,
        reasons=reasons,
        checks=[SafetyCheck(name=f.name, verdict=f.verdict, detail=f.detail) for f in findings],
        ops=len(sent),
        acked_writes=sum(1 for op in sent if op.kind == "write" and op.outcome == "ok"),
        lost_writes=lost.count if lost else 0,
        keys=len({op.key for op in sent if op.kind == "write"}),
        counterexample=Counterexample(checker=first.name, summary=first.detail, ops=[view(op) for op in first.ops])
        if first else None,
        availability=availability(ops, fault_start_ns, fault_end_ns),
        check_s=round(time.perf_counter() - began, 3),
    )
