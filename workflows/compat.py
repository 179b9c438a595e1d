"""Compatibility: every patch the chaos workflows carry, in one table, and the only module that calls the SDK's
patch API. `tests/unit/test_patch_policy.py` asserts both.

Why a table: a patch is a promise to runs already in flight. Written down with the release that added it, the
behaviour it replaced and the histories that still need that behaviour, it can be retired on a schedule instead of
staying forever. The policy (docs/patches.md):

- A change that alters the commands a run issues (activities, timers, children, markers, search-attribute or memo
  upserts, in number or in order) ships behind `patched(ID)`: runs started before it take the old branch on replay.
- The replay suite keeps the histories of the current release and the previous one (tests/workflow/histories/).
- In the release after every supported history takes the new branch, the patch moves to `deprecated(ID)`: the old
  branch is deleted, and the same marker is still written at the same point, so histories that carry it replay.
- In the release after that, the call is removed: the histories still kept then were all recorded with the
  deprecated marker, which the SDK skips on replay.
- A call site never moves earlier or later in the command order: a history cannot show that it did until a run of
  the old version fails to replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from temporalio import workflow


class State(str, Enum):
    ACTIVE = "active"  # `patched()`: the old branch still runs for old histories
    DEPRECATED = "deprecated"  # `deprecate_patch()`: old branch gone, marker kept; remove the call next release


@dataclass(frozen=True)
class Patch:
    id: str
    added: str  # the release whose workers first wrote its marker
    old_behaviour: str  # what runs started before it did instead
    needed_by: str  # the oldest histories that took the old branch
    state: State
    deprecated: str = ""  # the release that deprecated it (and retired `needed_by`)


# Releases are the recorded history sets: v1 ... v8 landed; v9 is this release. Supported now: v9 and v8.
RELEASE = "v9"
PREVIOUS_RELEASE = "v8"
PATCHES: dict[str, Patch] = {p.id: p for p in (
    Patch("fault-effect", "v8", "no check that the fault took effect (no confirm_fault activity after detection)",
          "v7", State.DEPRECATED, "v9"),
    Patch("fail-on-verdict", "v8", "a run whose verdict was fail completed (the web UI's list showed Completed); "
          "its report was the result", "v7", State.DEPRECATED, "v9"),
    Patch("cancel-after-inject", "v8", "a cancel that arrived during the inject was lost when the inject completed: "
          "the run went on detecting until its deadline", "v7", State.DEPRECATED, "v9"),
    Patch("load-after-lost-window", "v8", "the next load window waited 1 s after any failed one, also after one "
          "lost with its worker (the load's gap grew by that second)", "v7", State.DEPRECATED, "v9"),
    Patch("trip-in-last-window", "v8", "a stop condition tripped by a load window that began while the fault was on "
          "and ended after the restore began was dropped: the run could pass", "v7", State.DEPRECATED, "v9"),
    Patch("load-window-retry", "v9", "a load window lost with its worker was not retried: the next one started once "
          "a workflow task ran, after the dead worker's sticky queue had timed out (0.5 s more of gap)", "v8",
          State.ACTIVE),
    Patch("guard-in-countdown", "v9", "the first fault's guard started after the countdown, and the kill waited "
          "for it to start (one workflow task more between the countdown's end and the kill)", "v8", State.ACTIVE),
    Patch("evidence-beside-confirm", "v9", "the diagnosis's evidence was gathered after the fault's effect was "
          "confirmed (one workflow task more between detection and the diagnosis)", "v8", State.ACTIVE),
    Patch("diagnose-beside-undo", "v9", "the fault stayed on until the diagnosis had answered (Claude's time, up to "
          "`diagnosis_deadline_s`), and only then was held or undone", "v8", State.ACTIVE),
    Patch("restore-from-first-attempt", "v9", "time to restore counted from the start of the restore attempt that "
          "succeeded: a restore that failed and was retried for a minute showed a time to restore of a second", "v8",
          State.ACTIVE),
)}


def patched(patch_id: str) -> bool:
    """An ACTIVE patch: True on new runs and on replays of runs that took the new branch."""
    _expect(patch_id, State.ACTIVE)
    return workflow.patched(patch_id)


def deprecated(patch_id: str) -> None:
    """A DEPRECATED patch: only its marker, written exactly where `patched()` was called."""
    _expect(patch_id, State.DEPRECATED)
    workflow.deprecate_patch(patch_id)


def _expect(patch_id: str, state: State) -> None:
    # A call that disagrees with the table is a bug in this release, found on the first run that reaches it.
    patch = PATCHES.get(patch_id)
    if patch is None or patch.state != state:
        raise RuntimeError(f"patch {patch_id!r} is not {state.value} in workflows/compat.py's table")
