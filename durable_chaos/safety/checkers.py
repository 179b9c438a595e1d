"""Checkers: pure functions on an operation history that say whether the system lost or invented data. `check`
runs them all on one history; each has a module of its own, which says what it checks:

- `lost_writes` (lost_writes.py): acknowledged writes that are gone from the final read;
- `linearizable` (linearizability.py): per key, an order of the register operations that explains every read;
- `tokens` (tokens.py): the system's own numbering of its writes;
- `availability` (availability.py): gaps, errors and latency per fault phase.

What a `fail` and an `info` outcome mean to them: findings.py.
"""

from __future__ import annotations

import time

from durable_chaos.contracts import Counterexample, OpView, SafetyCheck, SafetyReport
from durable_chaos.safety.availability import availability, moment, ns, percentile
from durable_chaos.safety.findings import Finding, describe
from durable_chaos.safety.history import Op
from durable_chaos.safety.linearizability import linearizable
from durable_chaos.safety.lost_writes import lost_writes
from durable_chaos.safety.tokens import tokens

# Callers import every checker, `percentile` and `ns` from here, as before the checkers had modules of their own.
__all__ = ["Finding", "availability", "check", "describe", "linearizable", "lost_writes", "ns", "percentile",
           "tokens", "view"]


def view(op: Op) -> OpView:
    return OpView(kind=op.kind, key=op.key, value=op.value, outcome=op.outcome, invoked_at=moment(op.invoke_ns),
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
