"""What the web UI, the CLI and `list` see of a run: the `progress` query, search attributes, the current details
(markdown) and the memo. Every stage change goes through here, so the run's code only says what happened.

Search attributes and the memo are history events: each is upserted only when it changes, in the same order as
the stages that change them (a reordered upsert would fail replay).
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

from workflows.chaos import stages
from workflows.chaos.state import seconds


with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import Attr, FaultState, Progress, Stage


class View(stages.HostWaiting):
    def __init__(self) -> None:
        self.progress = Progress()
        self._memo: dict = {}  # what the memo holds now: only changes are upserted (each upsert is an event)

    def stage(self, stage: Stage, message: str) -> None:
        self.progress.stage = stage
        self.progress.message = message
        workflow.upsert_search_attributes([Attr.STAGE.value_set(stage.value)])
        self.details()

    def say(self, message: str) -> None:
        """A new message within the current stage."""
        self.stage(self.progress.stage, message)

    def waiting(self, host: str, since: datetime) -> None:
        """No worker of the subject's host has taken the restore: the run waits for one (a dead host's worker must
        come back; nobody else may touch its containers)."""
        self.progress.waiting_for_host, self.progress.host_waiting_since = host, since
        self.say(f"waiting for a worker on host {host}: none has taken the restore since {since:%H:%M:%S} UTC")

    def served(self, host: str) -> None:
        self.progress.waiting_for_host = self.progress.host_waiting_since = None
        self.say(f"a worker on host {host} took the restore")

    def fault_state(self, state: FaultState) -> None:
        self.progress.fault_state = state
        workflow.upsert_search_attributes([Attr.FAULT_STATE.value_set(state.value)])
        self.details()

    def fault_label(self, label: str) -> None:
        workflow.upsert_search_attributes([Attr.FAULT.value_set(label)])

    def target(self, target: str) -> None:
        workflow.upsert_search_attributes([Attr.TARGET.value_set(target)])

    def detected(self, injected_at: datetime, detected_at: datetime | None) -> None:
        self.progress.time_to_detect_s = seconds(injected_at, detected_at)
        workflow.upsert_search_attributes([Attr.DETECT_SECONDS.value_set(self.progress.time_to_detect_s)])

    def restored(self, started_at: datetime, healthy_at: datetime) -> None:
        self.progress.time_to_restore_s = seconds(started_at, healthy_at)
        workflow.upsert_search_attributes([Attr.RESTORE_SECONDS.value_set(self.progress.time_to_restore_s)])
        self.details()  # a cancelled run ends without a report: the memo gets TTR here

    def steps(self, faults) -> None:
        """Every fault so far, as the report will show it (the `progress` query only: no history event)."""
        self.progress.steps = [f.report() for f in faults]

    def diagnosis_graded(self, correct: bool) -> None:
        workflow.upsert_search_attributes([Attr.DIAGNOSIS_CORRECT.value_set(correct)])

    def verdict(self, verdict: str) -> None:
        self.progress.verdict = verdict
        self.stage(Stage.DONE, f"verdict: {verdict}")
        workflow.upsert_search_attributes([Attr.VERDICT.value_set(verdict)])

    def details(self) -> None:
        p = self.progress
        if p.countdown_ends_at is not None:
            # workflow.now() is the replay-safe clock; it moves with every load window, which keeps this current.
            p.countdown_left = p.countdown_seconds_left(workflow.now())
        workflow.set_current_details("\n\n".join(detail_lines(p, workflow.now())))
        self._sync_memo()

    def _sync_memo(self) -> None:
        """Keep the run's facts in its memo: current details need a live worker to answer, the memo does not."""
        facts = self.progress.facts().model_dump(mode="json", exclude_none=True)
        changed = {key: value for key, value in facts.items() if self._memo.get(key) != value}
        if changed:
            workflow.upsert_memo(changed)
            self._memo.update(changed)


def detail_lines(p: Progress, now: datetime) -> list[str]:
    """The current details as markdown lines; `now` is the workflow's replay-safe clock."""
    lines = [f"**Stage:** {p.stage.value} - {p.message}",
             f"**Fault:** {p.fault_label or p.fault}",
             f"**Target:** {', '.join(p.targets) or p.target or 'not chosen yet'}",
             f"**Fault state:** {p.fault_state.value}"]
    if p.countdown_ends_at is not None:
        lines.append(f"**Countdown:** {p.countdown_left} s left, ends at {p.countdown_ends_at:%H:%M:%S} UTC")
    if p.last_window:
        w = p.last_window
        lines.append(f"**Load:** {w.ops_per_s:g} ops/s, {w.errors} errors (window {p.windows})")
    if p.stage == Stage.DETECT and p.injected_at and p.detect_deadline:
        lines.append(f"**Detection clock:** {(now - p.injected_at).total_seconds():.1f} s since the fault on "
                     f"{', '.join(p.targets) or p.target}, gives up at {p.detect_deadline:%H:%M:%S} UTC")
    if p.waiting_for_host is not None:
        lines.append(f"**Waiting for host:** {p.waiting_for_host} has no worker taking the restore (since "
                     f"{p.host_waiting_since:%H:%M:%S} UTC)")
    if p.time_to_detect_s is not None:
        lines.append(f"**Time to detect:** {p.time_to_detect_s:.3f} s")
    if p.time_to_restore_s is not None:
        lines.append(f"**Time to restore:** {p.time_to_restore_s:.3f} s")
    return lines
