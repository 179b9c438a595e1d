"""The same run without Temporal: the workflow's stages as a plain asyncio script calling the same activity
functions directly, so the difference to a workflow run is what orchestration costs.

`ActivityEnvironment` gives the real activity functions the activity context they heartbeat into, with no server.
Stages run in the workflow's order with the load alongside, the restore in `finally`, and the load stopped the
same way (the window in flight finishes) - only the orchestration differs. The work is the workflow's too: the
check that the fault took effect after detection, and the data safety check over this run's own history at the end
(each plain run has its own ids, so its history is its own), and the slow-member watch preflight measures, which
detection and the wait until healthy use (without it, the plain wait ended while a restarted member still answered
slowly: 0.13 s a run sooner on a copy the load generator had filled). What the workflow runs side by side, so does
the script: the evidence beside that check, and the diagnosis while the fault is undone, awaited after the safety
check. Stages are timed as the history's are (`measure.stage_spans`), on the wall clock the server stamps too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

from temporalio.testing import ActivityEnvironment

from activities.diagnosis import diagnose, gather_evidence
from activities.faults import confirm_fault, inject_fault, restore_fault
from activities.load import run_load_window
from activities.probes import detect_violation, preflight, wait_healthy
from activities.safety import check_safety
from bench.measure import stage_spans
from durable_chaos.contracts import (
    ChaosInput,
    DetectRequest,
    DiagnoseRequest,
    EvidenceRequest,
    FaultRequest,
    LoadRequest,
    PreflightRequest,
    SafetyRequest,
    WaitHealthyRequest,
)
from workflows.chaos.stages import EVIDENCE_LOAD_WINDOWS


async def run_plain(inp: ChaosInput) -> dict[str, float]:
    """Run the stages directly; returns seconds per stage, keyed like `History.stage_seconds()`."""
    run_id = uuid.uuid4().hex

    def env() -> ActivityEnvironment:
        e = ActivityEnvironment()
        e.info = dataclasses.replace(e.info, workflow_id=f"plain-{run_id}", workflow_run_id=run_id)
        return e

    run = env().run
    began = datetime.now(timezone.utc)
    ends: dict[str, datetime] = {}  # when each stage ended

    def mark(stage: str) -> None:
        ends[stage] = datetime.now(timezone.utc)

    async def timed(stage: str, activity, arg):
        try:
            return await env().run(activity, arg)
        finally:
            mark(stage)

    pre = await run(preflight, PreflightRequest(subject=inp.subject, target=inp.target,
                                                timeout_s=inp.preflight_timeout_s, check_timeout_s=inp.check_timeout_s,
                                                slow=inp.slow))
    mark("preflight")
    # As the workflow: unset timeouts take the subject's defaults.
    inp = inp.model_copy(update={"detect_timeout_s": inp.detect_timeout_s or pre.defaults.detect_timeout_s,
                                 "restore_timeout_s": inp.restore_timeout_s or pre.defaults.restore_timeout_s})
    stop_load = False
    windows = []
    rounds = 0  # windows started, lost ones too (as the workflow counts them for the safety check)
    first_window_over = asyncio.Event()

    async def load_loop() -> None:
        nonlocal rounds
        due_from = None  # as the workflow: each window carries on the previous one's schedule
        while not stop_load:
            rounds += 1
            try:
                windows.append(await env().run(run_load_window, LoadRequest(
                    subject=inp.subject, window_s=inp.load_window_s, concurrency=inp.load_concurrency,
                    check_timeout_s=inp.check_timeout_s, rate=inp.load_rate, due_from=due_from)))
                due_from = windows[-1].start + timedelta(seconds=inp.load_window_s)
            except Exception:  # same as the workflow: a lost window is a gap, retry after a second
                due_from = None
                first_window_over.set()
                await asyncio.sleep(1)
            first_window_over.set()

    load = asyncio.create_task(load_loop())
    fault = FaultRequest(subject=inp.subject, fault=inp.fault, target=inp.target)
    injected = healthy = diagnosis = None
    try:
        await first_window_over.wait()  # as the workflow: no kill before a baseline window has ended
        injected = await run(inject_fault, fault)
        mark("inject_fault")
        detection = await run(detect_violation, DetectRequest(
            subject=inp.subject, interval_s=inp.detect_interval_s, timeout_s=inp.detect_timeout_s,
            check_timeout_s=inp.check_timeout_s, slow=pre.slow))
        mark("detect_violation")
        _, evidence = await asyncio.gather(run(confirm_fault, fault), timed("gather_evidence", gather_evidence, (
            EvidenceRequest(subject=inp.subject, detect=detection, injected_at=injected.fault_began,
                            load_windows=windows[-EVIDENCE_LOAD_WINDOWS:]))))
        diagnosis = asyncio.create_task(timed("diagnose", diagnose, DiagnoseRequest(
            evidence=evidence, deadline_s=inp.diagnosis_deadline_s)))
    finally:
        if injected is not None:
            await run(restore_fault, fault)
            mark("restore_fault")
            healthy = await run(wait_healthy, WaitHealthyRequest(
                subject=inp.subject, timeout_s=inp.restore_timeout_s, check_timeout_s=inp.check_timeout_s,
                slow=pre.slow))
            mark("wait_healthy")
        stop_load = True
        await load
        mark("load_tail")
    await run(check_safety, SafetyRequest(
        subject=inp.subject, check_timeout_s=inp.check_timeout_s, windows=rounds,
        fault_started_at=injected.fault_began if injected else None, fault_ended_at=healthy.at if healthy else None))
    if diagnosis is not None:
        await diagnosis
    mark("finish")
    return stage_spans(began, ends, ends["load_tail"], ends["finish"])
