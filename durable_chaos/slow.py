"""Gray failures: a member that still answers, only far slower than it did before the fault.

Detection used to be "up or down": a member ten times slower than its baseline counted as healthy, so a delay or a
rate cap went undetected. Each member's probe latency in preflight (the median of a few checks, before any fault)
is its baseline; a member whose probe answers stay above `factor` × that baseline, and `floor_ms` above it, for
`checks` checks in a row is *slow*. The figures are the member's own: a Patroni member's REST API is slower than
an etcd member's health endpoint, and a busy shared host slows everything a little, which the floor absorbs.

Pure: the activities feed it the checks they make, and the unit tests feed it made-up ones.
"""

from __future__ import annotations

import statistics

from pydantic import ValidationError

from durable_chaos.contracts import CheckResult, SlowRule, SlowWatch


def slow_rule(default: SlowRule, given: dict) -> SlowRule:
    """The subject's rule with the run's own values laid over it (`--slow-factor`, an experiment's `slow:`);
    ValueError with one line for a value out of range."""
    try:
        return SlowRule.model_validate(default.model_dump() | given)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(part) for part in err["loc"])
        raise ValueError(f"slow {name}={err.get('input')!r} is invalid: {err['msg']}") from None


def baseline(rule: SlowRule, checks: list[CheckResult]) -> SlowWatch:
    """The rule with every member's baseline: the median latency of its healthy answers in `checks`."""
    seen: dict[str, list[float]] = {}
    for check in checks:
        healthy = {m.service for m in check.members if m.healthy}
        for service, ms in check.latency_ms.items():
            if service in healthy:
                seen.setdefault(service, []).append(ms)
    return SlowWatch(**rule.model_dump(), baseline_ms={s: round(statistics.median(v), 2) for s, v in seen.items()})


def line_ms(watch: SlowWatch, service: str) -> float | None:
    """Above this a member's answer is slow; None when it has no baseline (it never answered in preflight)."""
    base = watch.baseline_ms.get(service)
    if base is None:
        return None
    return max(base * watch.factor, base + watch.floor_ms)


def answered(check: CheckResult) -> dict[str, float]:
    """service -> latency, for members that answered this check and were healthy: a member that timed out gave no
    answer (its time is the timeout's), and one that answered "unhealthy" is already a violation of its own."""
    healthy = {m.service for m in check.members if m.healthy}
    return {s: ms for s, ms in check.latency_ms.items() if s in healthy}


def slow_now(watch: SlowWatch, check: CheckResult) -> dict[str, float]:
    """service -> its latency, for members whose healthy answer in this check was over the line."""
    out = {}
    for service, ms in answered(check).items():
        line = line_ms(watch, service)
        if line is not None and ms > line:
            out[service] = ms
    return out


def finding(watch: SlowWatch, service: str, ms: float, checks: int) -> str:
    """"etcd2: slow: answers in 412 ms, 82x its baseline of 5 ms (3 checks in a row)": what detection, evidence and
    the diagnosis say about a slow member."""
    base = watch.baseline_ms[service]
    times = f"{ms / base:.0f}x" if base > 0 else "far above"
    return (f"{service}: slow: answers in {ms:.0f} ms, {times} its baseline of {base:.0f} ms "
            f"({checks} check{'s' if checks != 1 else ''} in a row)")


class SlowTracker:
    """Counts, per member, the checks in a row that found it slow; says who reached the rule's count."""

    def __init__(self, watch: SlowWatch):
        self.watch = watch
        self.streak: dict[str, int] = {}

    def see(self, check: CheckResult) -> dict[str, str]:
        """Feed one check; service -> finding for every member slow for `checks` checks in a row now."""
        slow = slow_now(self.watch, check)
        # A member that gave no healthy answer this check (it timed out, or a fail-fast check left it out) keeps its
        # streak: no answer is not a fast answer.
        for service in answered(check):
            self.streak[service] = self.streak.get(service, 0) + 1 if service in slow else 0
        return {s: finding(self.watch, s, ms, self.streak[s]) for s, ms in slow.items()
                if self.streak[s] >= self.watch.checks}


def as_violation(check: CheckResult, slow: dict[str, str]) -> CheckResult:
    """The check, failed by the members found slow: each answered, so each stays healthy in `members` (it is not
    down), and the violation says how slow it is."""
    if not slow:
        return check
    return check.model_copy(update={"ok": False, "violations": [*check.violations, *slow.values()]})
