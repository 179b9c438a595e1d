"""The history file format: JSON lines in Jepsen's shape, one event per line.

    {"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": [1, 4], "time": 123456789}
    {"process": 3, "type": "ok", "f": "cas", "key": "k1", "value": [1, 4], "time": 123999000, "token": 57}

`type` is invoke, ok, fail or info; an invoke is completed by the next ok/fail/info of the same process. `time` is
in nanoseconds (ours: since the epoch; other tools': any clock that grows; without it, the line order is the clock).
`key` is optional (one register). `process: "nemesis"` lines are faults, not client operations: `f` starting with
"start" opens a fault window, with "stop" closes it. Besides Jepsen's fields, our completions may carry `token`,
`error`, `final` (the final read phase) and `capped` (never sent: the load's concurrency cap). Every field is
documented in docs/history-format.md.

Reading pairs the events into `Op`s (history.py) and refuses what no checker could use, with the line and the field:
`BadHistory`. Each model may check the shape of its values (`Model.shape_error`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from durable_chaos.safety.op import Op

TYPES = ("invoke", "ok", "fail", "info")
NEMESIS = "nemesis"


class BadHistory(ValueError):
    """A history line no checker can use: `LINE n: field: what is wrong`."""

    def __init__(self, line: int, field_name: str, problem: str):
        super().__init__(f"line {line}: {field_name}: {problem}")
        self.line, self.field = line, field_name


@dataclass
class FaultWindow:
    start_ns: int
    end_ns: int | None  # None: never stopped within the history
    label: str


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)


# -- writing -------------------------------------------------------------------------------------------------------


def invoke_value(op: Op) -> Any:
    """What the client asked for. An `Op` keeps the completion's value (what a read returned); the invoke of a read
    carries nothing, and a transaction's reads are not known yet."""
    if op.kind in ("read", "fetch", "drain"):
        return None
    if op.kind == "txn" and isinstance(op.value, list):
        return [[m[0], m[1], m[2] if m[0] == "append" else None] for m in op.value]
    return op.value


def events(op: Op, process: int | str) -> tuple[dict, dict]:
    """One operation as its invoke and completion lines (defaults left out: a line is then ~100 bytes)."""
    invoke: dict[str, Any] = {"process": process, "type": "invoke", "f": op.kind}
    if op.key is not None:
        invoke["key"] = op.key
    invoke["value"] = invoke_value(op)
    invoke["time"] = op.invoke_ns
    done = dict(invoke, type=op.outcome, time=op.complete_ns)
    done["value"] = op.value
    for name in ("token", "error", "final", "capped"):
        extra = getattr(op, name)
        if extra is not None and extra is not False:
            done[name] = extra
    return invoke, done


def nemesis_events(start_ns: int, end_ns: int | None, label: str) -> list[dict]:
    lines = [{"process": NEMESIS, "type": "info", "f": "start", "value": label, "time": start_ns}]
    if end_ns is not None:
        lines.append({"process": NEMESIS, "type": "info", "f": "stop", "value": label, "time": end_ns})
    return lines


def lines_of(ops: Iterable[Op], faults: Iterable[FaultWindow] = ()) -> Iterator[str]:
    """The history's lines in time order. Jepsen's shape allows one operation at a time per process, and the load's
    client slots can have two in flight (an answer slower than the slot's turn): a busy slot's operation is written
    under a process number of its own, past every slot's."""
    ops = sorted(ops, key=lambda op: op.invoke_ns)
    spare = max((op.process for op in ops), default=0) + 1
    busy_until: dict[int, int] = {}
    # (time, order, event). At equal times invokes first: an operation answered at once (a capped one) is then
    # invoked before it completes, and one process never has two operations that touch.
    timed: list[tuple[int, int, dict]] = []
    for op in ops:
        process = op.process
        if busy_until.get(process, -1) >= op.invoke_ns:
            process, spare = spare, spare + 1
        busy_until[process] = op.complete_ns
        invoke, done = events(op, process)
        timed += [(op.invoke_ns, 0, invoke), (op.complete_ns, 1, done)]
    for w in faults:
        for event in nemesis_events(w.start_ns, w.end_ns, w.label):
            timed.append((event["time"], 2, event))
    timed.sort(key=lambda t: (t[0], t[1]))
    for _, _, event in timed:
        yield json.dumps(event, separators=(",", ":"))


# -- reading -------------------------------------------------------------------------------------------------------


def _name(value: Any) -> Any:
    """Jepsen's keywords arrive from EDN converters as ":read"; ours are plain."""
    return value[1:] if isinstance(value, str) and value.startswith(":") else value


ShapeCheck = Callable[[str, str, Any], "str | None"]  # (f, type, value) -> what is wrong with it, or None


def parse(lines: Iterable[str], known: Iterable[str] | None = None, shape: ShapeCheck | None = None) -> History:
    """Pair a history's lines into operations. `known`: the `f`s the model understands (None: any); `shape`: checks
    a value against the model. An invoke never completed is an `info` (its outcome is unknown)."""
    known = set(known) if known is not None else None
    history = History()
    pending: dict[Any, tuple[int, int, dict]] = {}  # process -> (line number, its time, invoke event)
    open_faults: dict[str, FaultWindow] = {}
    clock = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadHistory(number, "json", f"not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(event, dict):
            raise BadHistory(number, "json", "a line must be a JSON object")
        kind = _name(event.get("type"))
        if kind not in TYPES:
            raise BadHistory(number, "type", f"{event.get('type')!r} is not one of {', '.join(TYPES)}")
        if "process" not in event:
            raise BadHistory(number, "process", "missing")
        process = _name(event["process"])
        t = event.get("time", clock + 1)
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise BadHistory(number, "time", f"{t!r} is not a number")
        clock = int(t)
        f = _name(event.get("f"))
        if process == NEMESIS:
            label = str(_name(event.get("value")) or f)
            if isinstance(f, str) and f.startswith("start") and label not in open_faults:
                open_faults[label] = FaultWindow(clock, None, label)
                history.faults.append(open_faults[label])
            elif isinstance(f, str) and f.startswith("stop"):
                # A stop names the fault it ends, or (Jepsen's nemeses) ends the one open.
                window = open_faults.pop(label, None) or (open_faults.pop(next(iter(open_faults))) if open_faults
                                                          else None)
                if window is not None:
                    window.end_ns = clock
            continue
        if not isinstance(process, int) or isinstance(process, bool):
            raise BadHistory(number, "process", f"{event['process']!r} is not a client number (or \"nemesis\")")
        if not isinstance(f, str):
            raise BadHistory(number, "f", "missing" if f is None else f"{f!r} is not a name")
        if known is not None and f not in known:
            raise BadHistory(number, "f", f"{f!r} is not an operation of this model ({', '.join(sorted(known))})")
        key = event.get("key")
        if key is not None and not isinstance(key, str | int):
            raise BadHistory(number, "key", f"{key!r} is not a string or a number")
        value = event.get("value")
        if shape is not None and (problem := shape(f, kind, value)):
            raise BadHistory(number, "value", problem)
        if kind == "invoke":
            if process in pending:
                raise BadHistory(number, "process", f"process {process} invoked again before its operation of "
                                                    f"line {pending[process][0]} completed")
            pending[process] = (number, clock, event)
            continue
        began = pending.pop(process, None)
        if began is None:
            raise BadHistory(number, "type", f"a completion ({kind}) of process {process} with no invoke before it")
        _, invoked_ns, invoke = began
        if _name(invoke.get("f")) != f:
            raise BadHistory(number, "f", f"{f!r} completes process {process}'s {invoke.get('f')!r} of line "
                                          f"{began[0]}")
        history.ops.append(_op(invoke, event, kind, invoked_ns, clock))
    for _, invoked_ns, invoke in pending.values():  # never completed: it may or may not have happened
        history.ops.append(_op(invoke, {}, "info", invoked_ns, clock))
    history.ops.sort(key=lambda op: op.invoke_ns)
    return history


def _op(invoke: dict, done: dict, outcome: str, invoke_ns: int, complete_ns: int) -> Op:
    key = invoke.get("key")
    value = done.get("value") if outcome == "ok" else invoke.get("value")
    return Op(kind=_name(invoke["f"]), outcome=outcome, invoke_ns=invoke_ns,
              complete_ns=complete_ns, key=None if key is None else str(key), value=value,
              process=_name(invoke["process"]), token=done.get("token"), error=done.get("error"),
              final=bool(done.get("final", False)), capped=bool(done.get("capped", False)))
