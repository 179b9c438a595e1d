"""What the server itself knows of a run: its search attributes and its memo. No worker is needed to read them.

A `progress` query is answered by a worker; a run that no worker serves still has these. Where the memo says
something (the workflow records its decisions there as it goes), it wins over the search attribute: the target,
for one, becomes a search attribute only at the kill, but is chosen before it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from durable_chaos.contracts import Attr

if TYPE_CHECKING:  # only named in annotations: `check` renders a safety panel without loading Temporal's client
    from temporalio.client import WorkflowExecution


@dataclass
class RunFacts:
    """A run's facts read back from the server. Not `contracts.RunFacts`, the model the workflow writes into the
    memo: that one has every fact set, but what the server hands back may have any of them missing (a run started
    before the memo had them, a memo this version cannot decode, a run started without the start attributes), so
    every fact here may be None; and the server adds what the workflow never writes (ids, status, start time)."""

    workflow_id: str
    run_id: str
    status: str | None
    started_at: datetime
    subject: str | None
    fault: str | None
    fault_label: str | None
    target: str | None
    targets: list[str] | None
    stage: str | None
    fault_state: str | None
    verdict: str | None
    time_to_detect_s: float | None
    time_to_restore_s: float | None
    diagnosis_correct: bool | None
    host: str | None = None
    waiting_for_host: str | None = None

    @property
    def fault_on(self) -> str:
        """e.g. "loss 30% on etcd2": the kind with its parameters and the members it hit, as far as the run got."""
        members = ", ".join(self.targets or []) or self.target or "-"
        return f"{self.fault_label or self.fault or '?'} on {members}"

    @property
    def the_fault(self) -> str:
        """e.g. "the fault on etcd2 (loss 30%)"; a run started without the start attributes has no fault kind."""
        what = self.fault_label or self.fault
        return (f"the fault on {', '.join(self.targets or []) or self.target or 'an unknown target'}"
                + (f" ({what})" if what else ""))


async def _memo(wf: WorkflowExecution) -> dict[str, Any]:
    # A memo this version cannot decode must not hide what the search attributes say.
    with contextlib.suppress(Exception):
        return dict(await wf.memo())
    return {}


async def run_facts(wf: WorkflowExecution) -> RunFacts:
    """A listed or described run's facts: the memo's value where it has one, else the search attribute's."""
    attrs, memo = wf.typed_search_attributes, await _memo(wf)

    def fact(name: str, key):
        return memo.get(name) if memo.get(name) is not None else attrs.get(key)

    return RunFacts(
        workflow_id=wf.id, run_id=wf.run_id, status=wf.status.name if wf.status else None, started_at=wf.start_time,
        subject=attrs.get(Attr.SUBJECT), fault=fact("fault", Attr.FAULT), fault_label=memo.get("fault_label"),
        target=fact("target", Attr.TARGET), targets=memo.get("targets"),
        stage=fact("stage", Attr.STAGE), fault_state=fact("fault_state", Attr.FAULT_STATE),
        verdict=fact("verdict", Attr.VERDICT), time_to_detect_s=fact("time_to_detect_s", Attr.DETECT_SECONDS),
        time_to_restore_s=fact("time_to_restore_s", Attr.RESTORE_SECONDS),
        diagnosis_correct=fact("diagnosis_correct", Attr.DIAGNOSIS_CORRECT),
        host=fact("host", Attr.HOST), waiting_for_host=memo.get("waiting_for_host"),
    )


def cancelled_text(f: RunFacts) -> str:
    """What a cancelled run left behind, in one line: a cancel the user asked for is an outcome, not an error."""
    if f.fault_state == "restored":
        return f"run {f.workflow_id} cancelled: {f.the_fault} had been injected and was restored"
    if f.fault_state == "injected":
        return (f"run {f.workflow_id} cancelled, but {f.the_fault} is still recorded as injected: "
                f"`python starter.py reap` restores it")
    return f"run {f.workflow_id} cancelled: nothing had been injected"
