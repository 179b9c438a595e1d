"""What a running run is retrying, and why: the server's record of its pending activities.

The server retries a stage that failed, and the restore for as long as it takes (workflows/policy.py). The workflow
sees only the attempt that succeeds, so its `progress` cannot say that a restore has failed five times because the
member's port is taken. The server can: each pending activity carries its attempt and its last failure. The live
view and `status` show them beside the run's progress, so a run that seems stuck says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from durable_chaos.wording import one_line

if TYPE_CHECKING:  # only its fields are read: nothing to import when the command line starts
    from temporalio.api.workflow.v1 import PendingActivityInfo

# A failure's text in one line of the view (wording.one_line keeps its end, where the cause is).
MESSAGE_CHARS = 240


@dataclass(frozen=True)
class Retrying:
    activity: str  # the activity's name, e.g. restore_fault
    attempt: int  # the attempt running now, or the next one while the server backs off
    failure: str  # why the last attempt failed, in one line
    next_at: datetime | None  # when the next attempt starts, while the server backs off

    def text(self, now: datetime) -> str:
        left = (self.next_at - now).total_seconds() if self.next_at is not None else 0.0
        when = f" (next attempt in {left:.0f} s)" if left >= 1 else ""  # backing off: not the attempt under way
        return f"{self.activity}: attempt {self.attempt}, the last one failed: {self.failure}{when}"


def retrying(pending: Iterable[PendingActivityInfo]) -> list[Retrying]:
    """The activities of a run (`desc.raw_description.pending_activities`) that have failed at least once."""
    out = []
    for a in pending:
        if a.attempt < 2 or not a.HasField("last_failure"):
            continue
        next_at = (a.next_attempt_schedule_time.ToDatetime(tzinfo=timezone.utc)
                   if a.HasField("next_attempt_schedule_time") else None)
        failure = one_line(a.last_failure.message or "no message", MESSAGE_CHARS)
        out.append(Retrying(a.activity_type.name, a.attempt, failure, next_at))
    return out
