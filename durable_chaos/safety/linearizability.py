"""Linearizability: the operations on each object can be ordered as if one at a time, each between its invoke and
its answer, and that order is legal for the object's model (models.py). Wing & Gong's search with memoisation, as
in Lowe's and Porcupine's checkers; no Python library does it, and the search is small enough to own."""

from __future__ import annotations

import bisect
from typing import Any

from durable_chaos.safety.findings import INFINITY, Finding, describe
from durable_chaos.safety.models import REGISTER, Register, frozen, unique_values, written
from durable_chaos.safety.op import Op

# Search steps per key before the linearizability checker gives up on that key (verdict unknown, never a guess).
SEARCH_BUDGET = 2_000_000
COUNTEREXAMPLE_OPS = 8


class _Node:
    """One call or return event in the doubly linked list the search lifts operations out of."""

    __slots__ = ("index", "match", "next", "op", "prev")

    def __init__(self, op: Op | None, index: int):
        self.op, self.index = op, index
        self.match: _Node | None = None  # a call's return event (None on a return)
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _event_list(ops: list[Op], deadlines: dict[int, int]) -> _Node:
    """The ops' call and return events in time order, as a doubly linked list behind a head node; each call node
    points at its return."""
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke_ns, 0, i))
        # An info op may take effect at any moment after its invoke: its return is its deadline (models.py), or
        # the end of time.
        events.append((deadlines.get(id(op), INFINITY) if op.outcome == "info" else op.complete_ns, 1, i))
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
    return head


def _lift(call: _Node) -> None:
    call.prev.next = call.next
    if call.next:
        call.next.prev = call.prev
    ret = call.match
    ret.prev.next = ret.next
    if ret.next:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    ret.prev.next = ret
    if ret.next:
        ret.next.prev = ret
    call.prev.next = call
    if call.next:
        call.next.prev = call


def _search(ops: list[Op], model: Register, budget: int) -> tuple[bool | None, Op | None, Any]:
    """Wing & Gong's search: (True, None, None) if linearizable; (False, the op at which the longest attempt got
    stuck, the state it found there) if not; (None, None, None) if the budget ran out.

    Events are in time order; at each call event try to linearize that op now (its effect is legal in the current
    state): lift it out of the list and start again from the front. Meeting a return event means its op should
    already have been linearized: backtrack. (set of linearized ops, state) pairs already tried are memoised, which
    is what makes the search practical (Lowe, "Testing for linearizability", 2017)."""
    head = _event_list(ops, model.deadlines(ops))
    state = model.init()
    linearized = 0  # bit i set: ops[i] is linearized
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Node, Any]] = []
    stuck: tuple[int, Op | None, Any] = (-1, None, None)
    node = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            return None, None, None
        if node.match is not None:  # a call: can its op take effect now?
            legal, new_state = model.step(state, node.op)
            if legal:
                bits = linearized | (1 << node.index)
                if (bits, new_state) not in seen:
                    seen.add((bits, new_state))
                    stack.append((node, state))
                    state, linearized = new_state, bits
                    _lift(node)
                    node = head.next
                    continue
            node = node.next
        else:  # a return whose op was not linearized before it: undo the latest choice
            if len(stack) > stuck[0]:
                stuck = (len(stack), node.op, state)
            if not stack:
                return False, stuck[1], stuck[2]
            call, state = stack.pop()
            linearized &= ~(1 << call.index)
            _unlift(call)
            node = call.next
    return True, None, None


def _zones(ops: list[Op], model: Register) -> tuple[bool, Op | None, Any]:
    """A read/write register whose values are each written once is linearizable in O(n log n), without a search
    (Gibbons & Korach 1997; in the zone form of Golab, Li & Shah 2011). Each value's cluster (its write and the
    reads of it) spans a zone from the earliest answer among them to the latest invoke. If that answer came first,
    the value held the register through the whole zone (a forward zone); otherwise the cluster could have happened
    at one moment (a backward zone). Linearizable iff every read follows its write's invoke, no two forward zones
    overlap, and no backward zone lies inside a forward one. Returns as `_search` does. A value never written
    (`None` is the initial value: its "write" answered at the beginning of time) is a violation at once."""
    def answered(op: Op) -> float:
        return op.complete_ns if op.outcome == "ok" else INFINITY

    writes = {frozen(op.value): op for op in ops if op.kind == "write"}
    clusters: dict[Any, list[Op]] = {v: [w] for v, w in writes.items()}
    for r in (op for op in ops if op.kind == "read"):
        v = frozen(r.value)
        if v is not None and (v not in writes or answered(r) < writes[v].invoke_ns):
            # Nobody wrote it, or not before the read had answered.
            before = [w for w in writes.values() if w.outcome == "ok" and w.complete_ns < r.invoke_ns]
            return False, r, frozen(max(before, key=lambda w: w.complete_ns).value) if before else None
        clusters.setdefault(v, []).append(r)
    forward: list[tuple[float, float, Any, Op]] = []  # (earliest answer, latest invoke, value, the op invoked last)
    backward: list[tuple[float, float, Any]] = []  # (latest invoke, earliest answer, value)
    for v, cluster in clusters.items():
        first_answer = min(map(answered, cluster)) if v is not None else -INFINITY
        last = max(cluster, key=lambda op: op.invoke_ns)
        if first_answer < last.invoke_ns:
            forward.append((first_answer, last.invoke_ns, v, last))
        else:
            backward.append((last.invoke_ns, first_answer, v))
    forward.sort(key=lambda z: z[0])
    for (_, end, _, last), (start, _, v, _) in zip(forward, forward[1:]):
        if start < end:  # `last` read its value after `v` had certainly replaced it
            return False, last, v
    starts = [z[0] for z in forward]
    for b_start, b_end, v in backward:
        i = bisect.bisect_left(starts, b_start) - 1  # the forward zone that began last before this cluster
        if i >= 0 and b_end < forward[i][1]:  # and its value was still read after the whole cluster
            return False, forward[i][3], v
    return True, None, None


def _context(key_ops: list[Op], stuck: Op) -> list[Op]:
    """The ops that explain why `stuck` cannot be placed: the writes that completed last before it was sent, and
    every op that overlaps it."""
    end = INFINITY if stuck.outcome == "info" else stuck.complete_ns
    before = [op for op in key_ops if written(op) is not None and op.outcome == "ok"
              and op.complete_ns < stuck.invoke_ns]
    overlapping = [op for op in key_ops if op is not stuck and op.invoke_ns <= end
                   and (op.outcome == "info" or op.complete_ns >= stuck.invoke_ns)]
    # And who wrote what the stuck op saw (a read's value, a swap's expected one): the write that "came back".
    seen = stuck.value if stuck.kind == "read" else stuck.value[0] if stuck.kind == "cas" else None
    source = [op for op in key_ops if seen is not None and written(op) == frozen(seen)][:1]
    chosen = {id(op): op for op in source + before[-2:] + overlapping[:COUNTEREXAMPLE_OPS - 4] + [stuck]}
    return sorted(chosen.values(), key=lambda op: op.invoke_ns)


def linearizable(ops: list[Op], model: Register = REGISTER, budget: int = SEARCH_BUDGET) -> Finding:
    name = "linearizability"
    by_key = model.partition(ops)
    undecided = []
    for key in sorted(by_key, key=lambda k: by_key[k][0].invoke_ns):
        key_ops = by_key[key]
        fast = model.name == REGISTER.name and unique_values(key_ops)
        verdict, stuck, state = _zones(key_ops, model) if fast else _search(key_ops, model, budget)
        if verdict is False:
            return Finding(name, "violated", f"{'key ' + str(key) if key is not None else 'the register'}: no order "
                                             f"of its operations explains {describe(stuck)}: by then the {model.name} "
                                             f"holds {model.describe_state(state)} (e.g. a stale read, or a value "
                                             f"that came back)",
                           _context(key_ops, stuck), stuck=stuck)
        if verdict is None:
            undecided.append(key)
    if undecided:
        return Finding(name, "unknown", f"search budget ({budget} steps) exhausted on {len(undecided)} keys "
                                        f"(e.g. {undecided[0]}); the other {len(by_key) - len(undecided)} are "
                                        f"linearizable")
    return Finding(name, "ok", f"every one of {len(by_key)} keys behaves as a linearizable {model.name} "
                               f"({sum(len(v) for v in by_key.values())} operations)")
