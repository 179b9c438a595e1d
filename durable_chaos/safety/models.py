"""Sequential specifications for the linearizability search, in the manner of Porcupine's and Knossos's models.

A model says what one object does when operations reach it one at a time: its initial state, a step function
(state, operation) -> (legal, next state), how a history splits into independent objects (per key), which operations
can matter to the search at all, how to word a state for the counterexample, and which values are well formed. The
search (linearizability.py) works on any of them. States must be hashable: the search memoises on them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from durable_chaos.safety.op import Op


def frozen(value: Any) -> Any:
    """A JSON value as something hashable (other tools' histories may write lists where ours write strings)."""
    if type(value) in _SCALARS:  # the common case first: the search calls this for every step it tries
        return value
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, frozen(v)) for k, v in value.items()))
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def written(op: Op) -> Any:
    """The value an operation puts in its register if it takes effect; None if it writes nothing."""
    if op.kind == "write":
        return frozen(op.value)
    if op.kind == "cas" and isinstance(op.value, list) and len(op.value) == 2:
        return frozen(op.value[1])
    return None


def unique_values(ops: list[Op]) -> bool:
    """Whether every value is written once per key (ours are; other tools' histories often reuse a few)."""
    values = [(op.key, written(op)) for op in ops if written(op) is not None]
    return len(values) == len(set(values))


class Register:
    """A read/write register: a write sets the value, a read returns it. Its state before any write is None."""

    name = "register"
    fs = frozenset({"read", "write"})

    def init(self) -> Any:
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.kind == "write":
            return True, frozen(op.value)
        return frozen(op.value) == state, state

    def partition(self, ops: list[Op]) -> dict[str | None, list[Op]]:
        """Keys are independent registers: searching each alone keeps the search small."""
        by_key: dict[str | None, list[Op]] = defaultdict(list)
        for op in self.relevant(ops):
            by_key[op.key].append(op)
        return by_key

    def observations(self, op: Op) -> Any:
        """The value `op` saw the register hold, if it saw one (a read's answer); None otherwise."""
        return frozen(op.value) if op.kind == "read" and op.outcome == "ok" else None

    def relevant(self, ops: list[Op]) -> list[Op]:
        """The operations the search must place. A failed write never happened, a failed read says nothing. An info
        write whose value no placed operation saw may as well not have happened (always a legal choice: nothing
        between it and the next write depends on its value): leaving it out keeps the search from branching on it.
        Seen by an info operation counts only if that one is placed too, hence the fixed point."""
        placed = [op for op in ops if op.kind in self.fs and op.outcome == "ok"]
        pending = [op for op in ops if op.kind in self.fs and op.outcome == "info" and written(op) is not None]
        seen = {(op.key, v) for op in placed if (v := self.observations(op)) is not None}
        while True:
            joining = [op for op in pending if (op.key, written(op)) in seen]
            if not joining:
                return sorted(placed, key=lambda op: op.invoke_ns)
            placed += joining
            pending = [op for op in pending if (op.key, written(op)) not in seen]
            seen |= {(op.key, v) for op in joining if (v := self.observations(op)) is not None}

    def deadlines(self, ops: list[Op]) -> dict[int, int]:
        """id(info op) -> when it must have taken effect by, if it did: before the first operation that saw its
        value answered. Without a deadline an info operation may take effect until the end of time, and every one
        of them multiplies the search. Only where each value is written once (ours are unique per run; other tools'
        histories often reuse a few): then the first one to see a value saw exactly this write. A deadline before
        the invoke (the value was seen before it was written) leaves the op no moment: the search says so."""
        if not unique_values(ops):
            return {}
        first_seen: dict[tuple[str | None, Any], int] = {}
        for op in ops:
            v = self.observations(op)
            if v is not None and op.outcome == "ok":
                first_seen[(op.key, v)] = min(first_seen.get((op.key, v), op.complete_ns), op.complete_ns)
        return {id(op): max(op.invoke_ns, first_seen[(op.key, written(op))]) for op in ops
                if op.outcome == "info" and (op.key, written(op)) in first_seen}

    def describe_state(self, state: Any) -> str:
        return "nothing" if state is None else repr(state)

    def shape_error(self, f: str, kind: str, value: Any) -> str | None:
        if f == "write" and not _scalar(value):
            return f"a write's value must be one value, not {value!r}"
        if f == "read" and kind == "ok" and not _scalar(value):
            return f"a read returns one value, not {value!r}"
        return None


class CasRegister(Register):
    """A register with compare-and-set: cas [expected, new] sets new if the value is expected. A cas that failed
    (outcome fail) found another value and did not take effect."""

    name = "cas-register"
    fs = frozenset({"read", "write", "cas"})

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.kind == "cas":
            expected, new = op.value
            return frozen(expected) == state, frozen(new)
        return super().step(state, op)

    def observations(self, op: Op) -> Any:
        # A cas that swapped saw its expected value in the register, as surely as a read (one of unknown outcome
        # did, if it is placed).
        if op.kind == "cas" and op.outcome in ("ok", "info"):
            return frozen(op.value[0])
        return super().observations(op)

    def shape_error(self, f: str, kind: str, value: Any) -> str | None:
        if f == "cas" and not (isinstance(value, list) and len(value) == 2 and all(map(_scalar, value))):
            return f"a cas's value must be [expected, new], not {value!r}"
        return super().shape_error(f, kind, value)


REGISTER = Register()
CAS_REGISTER = CasRegister()
