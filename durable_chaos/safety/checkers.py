"""Checkers: pure functions on an operation history that say whether the system lost or invented data. `check`
runs the ones for the history's data model (`CHECKERS`) on one history; each has a module of its own, which says
what it checks:

- `lost_writes` (lost_writes.py): acknowledged writes that are gone from the final read;
- `linearizable` (linearizability.py): per key, an order of the operations that explains every read, for a model
  of models.py (a register, a register with compare-and-set);
- `tokens` (tokens.py): the system's own numbering of its writes;
- `check_queue` (queue.py): a log's lost, duplicated, unexpected and reordered messages, and replicas that disagree;
- `check_list_append` (list_append.py): transactions' dependency cycles, Elle-style, against an isolation level;
- `availability` (availability.py): gaps, errors and latency per fault phase.

What a `fail` and an `info` outcome mean to them: findings.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from durable_chaos.contracts import Counterexample, CycleEdge, OpView, SafetyCheck, SafetyReport
from durable_chaos.safety.availability import availability, moment, ns, percentile
from durable_chaos.safety.findings import Finding, describe
from durable_chaos.safety.linearizability import SEARCH_BUDGET, linearizable
from durable_chaos.safety.list_append import appended_keys, check_list_append
from durable_chaos.safety.queue import check_queue
from durable_chaos.safety.lost_writes import lost_writes
from durable_chaos.safety.models import CAS_REGISTER, REGISTER, Register, written
from durable_chaos.safety.op import Op
from durable_chaos.safety.tokens import tokens

# Callers import every checker, `percentile` and `ns` from here, as before the checkers had modules of their own.
__all__ = ["CHECKERS", "Finding", "availability", "check", "describe", "linearizable", "lost_writes", "ns",
           "percentile", "tokens", "view"]


def view(op: Op) -> OpView:
    return OpView(kind=op.kind, key=op.key, value=op.value, outcome=op.outcome, invoked_at=moment(op.invoke_ns),
                  latency_ms=round(op.latency_ms, 2), token=op.token, error=op.error, final=op.final,
                  process=op.process, completed_at=moment(op.complete_ns) if op.outcome != "info" else None)


def _registers(model: Register) -> Callable[..., list[Finding]]:
    def run(ops: list[Op], *, token_name: str | None = None, gapless: bool = False, budget: int = SEARCH_BUDGET,
            **_) -> list[Finding]:
        # Lost writes need a final read phase; a history without one (other tools' often have none) is still
        # checked for linearizability, which catches a lost write that a later read missed.
        findings = [lost_writes(ops)] if any(op.final for op in ops) else []
        findings.append(linearizable(ops, model, budget))
        if token_name is not None:
            findings.append(tokens(ops, token_name, gapless))
        return findings
    return run


# model -> its checkers: (ops, token_name=, gapless=, keeps_delivered=, isolation=) -> findings.
CHECKERS: dict[str, Callable[..., list[Finding]]] = {
    "register": _registers(REGISTER),
    "cas-register": _registers(CAS_REGISTER),
    "list-append": check_list_append,
    "queue": check_queue,
}


def _queue_shape(f: str, kind: str, value: Any) -> str | None:
    if f == "publish" and not (isinstance(value, dict) and "id" in value):
        return f"a publish's value must be a message {{\"id\": ..., \"publisher\": ..., \"n\": ...}}, not {value!r}"
    pairs = value.get("messages") if f == "drain" and isinstance(value, dict) else value
    if f in ("fetch", "drain") and kind == "ok" and not (
            isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 for p in pairs)):
        return f"a {f} returns [[id, sequence], ...]" + (" under \"messages\"" if f == "drain" else "") + \
            f", not {value!r}"
    return None


def _txn_shape(f: str, kind: str, value: Any) -> str | None:
    if not (isinstance(value, list) and all(isinstance(m, list) and len(m) == 3 and m[0] in ("append", "r")
                                            for m in value)):
        return f"a txn's value must be a list of [\"append\", key, value] and [\"r\", key, list], not {value!r}"
    return None


@dataclass(frozen=True)
class HistoryModel:
    """What a history of a model may hold: its operations (`f`) and how their values are shaped."""

    fs: frozenset[str]
    shape_error: Callable[[str, str, Any], str | None]


# Every model `starter.py check --model` knows, and what its history lines may say.
HISTORY_MODELS: dict[str, HistoryModel] = {
    "register": HistoryModel(REGISTER.fs, REGISTER.shape_error),
    "cas-register": HistoryModel(CAS_REGISTER.fs, CAS_REGISTER.shape_error),
    "queue": HistoryModel(frozenset({"publish", "fetch", "drain"}), _queue_shape),
    "list-append": HistoryModel(frozenset({"txn"}), _txn_shape),
}


def _changes_data(op: Op) -> bool:
    return written(op) is not None or op.kind == "publish" or bool(appended_keys(op))


def _counterexample(first: Finding) -> Counterexample:
    ops = sorted({id(op): op for op in first.ops + [e[i] for e in first.cycle for i in (0, 1)]}.values(),
                 key=lambda op: op.invoke_ns)
    index = {id(op): i for i, op in enumerate(ops)}
    return Counterexample(
        checker=first.name, summary=first.detail, anomaly=first.anomaly, ops=[view(op) for op in ops],
        stuck=index.get(id(first.stuck)),
        cycle=[CycleEdge(source=index[id(a)], target=index[id(b)], kind=kind, why=why)
               for a, b, kind, why in first.cycle])


def check(ops: list[Op], *, model: str | None = "register", isolation: str | None = None,
          token_name: str | None = None, gapless: bool = False, keeps_delivered: bool = False,
          fault_start_ns: int | None = None, fault_end_ns: int | None = None,
          unknown_because: list[str] | None = None, budget: int = SEARCH_BUDGET) -> SafetyReport:
    """The checkers of the history's data `model` on one history (None: the load's operations say nothing about
    data). `token_name`: what the subject's tokens are (None: it returns none). `isolation`: the level a
    list-append subject promises. `keeps_delivered`: a queue subject's stream keeps what it delivered (a log).
    `budget`: search steps per key before a search says unknown.
    `unknown_because`: what the caller already knows makes the data checks unsound (e.g. missing history parts);
    the checkers still run and say what they saw, but the verdict is `unknown` either way."""
    began = time.perf_counter()
    data_ops = [op for op in ops if op.kind != "op"]
    sent = [op for op in ops if not op.final]
    reasons = list(unknown_because or [])
    findings: list[Finding] = []
    if not data_ops or model is None:
        reasons.append("the subject's load declares no data operations: only availability is measured"
                       if sent else "no operations were recorded")
    else:
        findings = CHECKERS[model](ops, token_name=token_name, gapless=gapless, keeps_delivered=keeps_delivered,
                                   isolation=isolation, budget=budget)
    violated = [f for f in findings if f.verdict == "violated"]
    reasons += [f"{f.name}: {f.detail}" for f in findings if f.verdict != "ok"]
    # A history known to be incomplete (a lost window's operations may have landed) explains any violation the
    # checkers find in it: it cannot prove data was lost, so it says unknown, with what the checkers saw.
    verdict = "unknown" if unknown_because else "violated" if violated else "unknown" if reasons else "ok"
    lost = next((f for f in findings if f.name.startswith("lost")), None)
    first = violated[0] if violated else None
    return SafetyReport(
        verdict=verdict,
        model=model if data_ops else None,
        reasons=reasons,
        checks=[SafetyCheck(name=f.name, verdict=f.verdict, detail=f.detail) for f in findings],
        ops=len(sent),
        acked_writes=sum(1 for op in sent if _changes_data(op) and op.outcome == "ok"),
        lost_writes=lost.count if lost else 0,
        keys=len({op.key for op in sent if written(op) is not None}
                 | {key for op in sent for key in appended_keys(op)}),
        counterexample=_counterexample(first) if first else None,
        availability=availability(ops, fault_start_ns, fault_end_ns),
        check_s=round(time.perf_counter() - began, 3),
    )
