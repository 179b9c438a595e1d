"""The scorecard: a campaign's run against its previous completed run, cell by cell. Pure: the workflow calls it
with the two reports' cells, the tests without a server."""

from __future__ import annotations

from datetime import datetime

from durable_chaos.contracts import ChaosReport
from durable_chaos.contracts.campaign import CellChange, CellResult, Scorecard

# "Notably worse" for a time to detect or restore: more than 50 % slower AND more than 2 s slower. Both, because
# these times are noisy on a real cluster (an election timeout is randomised, a busy host delays a check by a
# poll interval): a relative bound alone would flag 0.2 s -> 0.4 s, an absolute one alone would flag 30 s -> 32.5 s.
# Both bounds together flag only a change a person would act on, e.g. a restore going from 3 s to 9 s.
SLOWER_RATIO = 1.5
SLOWER_BY_S = 2.0
# Data safety from best to worst: a check that could not decide is worse than ok, a lost write worst of all.
SAFETY_RANK = {"ok": 0, "unknown": 1, "violated": 2}
PASSING = "pass"


def failing_first(report: ChaosReport) -> list[str]:
    """A run's reasons tell its whole story (detected, restored, diagnosed...); a cell shows why its verdict is not
    a pass first (the verdict says so itself), so its one-line "why" is the one that matters."""
    return report.failed_because + [r for r in report.reasons if r not in report.failed_because]


def notably_slower(before: float, after: float) -> bool:
    return after > before * SLOWER_RATIO and after - before > SLOWER_BY_S


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def cell_changes(before: CellResult, after: CellResult) -> list[CellChange]:
    """How `after` did worse than `before` (the same cell in the previous run); empty when it did not."""
    changes = []

    def add(kind, was: str, now: str, detail: str) -> None:
        changes.append(CellChange(key=after.key, kind=kind, before=was, after=now, detail=detail))

    if before.state == PASSING and after.state != PASSING:
        add("verdict", before.state, after.state, f"{before.state} -> {after.state}"
            + (f": {after.reasons[0]}" if after.reasons else ""))
    for kind, was, now in (("time_to_detect", before.time_to_detect_s, after.time_to_detect_s),
                           ("time_to_restore", before.time_to_restore_s, after.time_to_restore_s)):
        if was is None:
            continue  # nothing to compare with (the earlier run never got that far)
        if now is None and after.state not in ("cancelled", "error"):
            add(kind, _seconds(was), _seconds(now), f"{kind.replace('_', ' ')}: {_seconds(was)} -> never")
        elif now is not None and notably_slower(was, now):
            add(kind, _seconds(was), _seconds(now),
                f"{kind.replace('_', ' ')}: {_seconds(was)} -> {_seconds(now)} (+{(now / was - 1) * 100:.0f} %)"
                if was > 0 else f"{kind.replace('_', ' ')}: {_seconds(was)} -> {_seconds(now)}")
    if (before.safety in SAFETY_RANK and after.safety in SAFETY_RANK
            and SAFETY_RANK[after.safety] > SAFETY_RANK[before.safety]):
        add("safety", before.safety, after.safety, f"data safety: {before.safety} -> {after.safety}")
    return changes


def compare(previous: list[CellResult] | None, current: list[CellResult], previous_run_id: str | None = None,
            previous_started_at: datetime | None = None) -> Scorecard:
    """The scorecard of `current` against `previous` (None: the campaign's first run, nothing to compare)."""
    if previous is None:
        return Scorecard()
    before = {c.key: c for c in previous}
    now = {c.key: c for c in current}
    regressions = [change for key, cell in now.items() if key in before for change in cell_changes(before[key], cell)]
    return Scorecard(previous_run_id=previous_run_id, previous_started_at=previous_started_at,
                     regressions=regressions, new_cells=[k for k in now if k not in before],
                     removed_cells=[k for k in before if k not in now])
