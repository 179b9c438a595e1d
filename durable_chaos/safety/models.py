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
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, frozen(v)) for k, v in value.items()))
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def written(op: Op) -> Any:
    """The value an operation puts in its register if it takes effect; None if it writes nothing."""
    if op.kind == "write":
        return frozen(op.value)
    if op.kind == "cas" and isinstance(op.value, list) and len(op.value) == 2:
        return frozen(op.value[1])
    return None


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

    def observed(self, ops: list[Op]) -> set[tuple[str | None, Any]]:
        """(key, value) pairs some client saw the register hold."""
        return {(op.key, frozen(op.value)) for op in ops if op.kind == "read" and op.outcome == "ok"}

    def relevant(self, ops: list[Op]) -> list[Op]:
        """The operations the search must place. A failed write never happened, a failed read says nothing. An info
        write whose value nobody saw may as well not have happened (always a legal choice): leaving it out keeps
        the search from branching on it."""
        seen = self.observed(ops)
        return [op for op in ops if op.kind in self.fs and (
            op.outcome == "ok" or op.outcome == "info" and written(op) is not None and (op.key, written(op)) in seen)]

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

    def observed(self, ops: list[Op]) -> set[tuple[str | None, Any]]:
        # A cas that succeeded saw its expected value in the register, as surely as a read.
        return super().observed(ops) | {(op.key, frozen(op.value[0])) for op in ops
                                        if op.kind == "cas" and op.outcome == "ok"}

    def shape_error(self, f: str, kind: str, value: Any) -> str | None:
        if f == "cas" and not (isinstance(value, list) and len(value) == 2 and all(map(_scalar, value))):
            return f"a cas's value must be [expected, new], not {value!r}"
        return super().shape_error(f, kind, value)


REGISTER = Register()
CAS_REGISTER = CasRegister()
