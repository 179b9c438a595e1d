"""Resume after a worker SIGKILL, at every stage of a run: from the SIGKILL to the next activity attempt running on
another worker (the killed stage's retry; for the countdown and a workflow task, the run's next attempt to start:
the retry of a load window lost with the worker, which the server dispatches by itself, or the first activity the
workflow schedules after the SIGKILL, which only a surviving worker can have asked for; that one is also reported
on its own, `kill_to_workflow_asking_s`).

Two workers serve the run, as a user who wants a run to survive its worker would run them. At each point the
worker holding that part of the run is SIGKILLed and the other one carries on:
- a stage activity (preflight, inject, detect, evidence, diagnose, restore, verify healthy, safety check): the
  worker running it. Its first attempt is held a few seconds (bench/held_worker.py) so the SIGKILL lands inside it;
  the retry runs after the heartbeat timeout.
- the countdown and the moment the inject is recorded: the worker holding the workflow (its sticky cache). The
  workflow's next task waits out the sticky queue's schedule-to-start timeout or the workflow task timeout.
A third worker is started right after each SIGKILL, as a supervisor would; how long `python worker.py` takes to
poll is reported on its own (add it when no second worker runs).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime, timedelta, timezone

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle

from bench.measure import read_history, summary
from bench.scenarios import Lab, _leader_and_follower
from durable_chaos.contracts import final_report

HOLD_S = 4.0
# Stage activities, as the run calls them, and the stage the live view shows for them.
ACTIVITY_POINTS = {
    "preflight": "preflight", "inject": "inject_fault", "detect": "detect_violation",
    "evidence": "gather_evidence", "diagnose": "diagnose", "restore": "restore_fault", "verify healthy": "wait_healthy",
    "safety check": "check_safety",
}
WORKFLOW_POINTS = ("countdown", "inject recorded")
POINTS = (*ACTIVITY_POINTS, *WORKFLOW_POINTS)
COUNTDOWN_S = 3


async def _activity_worker(handle: WorkflowHandle, name: str) -> str | None:
    """The identity of the worker running `name`'s first attempt, once it runs."""
    desc = await handle.describe()
    for p in desc.raw_description.pending_activities:
        if (p.activity_type.name == name and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and p.attempt == 1):
            return p.last_worker_identity
    return None


async def _workflow_worker(handle: WorkflowHandle, point: str) -> str | None:
    """The identity of the worker holding the workflow, once the run is at `point`."""
    history = await read_history(handle)
    at_point = history.countdown_started if point == "countdown" else bool(
        (inject := history.first("inject_fault")) and inject.closed)
    return history.workflow_worker if at_point else None


async def _server_side(handle: WorkflowHandle, name: str, killed_at: datetime) -> dict:
    """What the server saw of the killed attempt, from the run's pending activity: the last heartbeat it got before
    the SIGKILL, and when it timed the attempt out (its attempt number moves on)."""
    seen = {}
    for _ in range(200):  # 10 s at most
        for p in (await handle.describe()).raw_description.pending_activities:
            if p.activity_type.name != name:
                continue
            if p.attempt == 1 and p.HasField("last_heartbeat_time"):
                seen["last_heartbeat_before_kill_s"] = round(
                    (p.last_heartbeat_time.ToDatetime(tzinfo=timezone.utc) - killed_at).total_seconds(), 3)
            if p.attempt >= 2:  # the server has timed the killed attempt out (seen within 50 ms)
                seen.setdefault("timed_out_after_kill_s",
                                round((datetime.now(timezone.utc) - killed_at).total_seconds(), 3))
                if p.HasField("scheduled_time"):  # when the retry was due to any worker (after its backoff)
                    seen["retry_due_after_kill_s"] = round(
                        (p.scheduled_time.ToDatetime(tzinfo=timezone.utc) - killed_at).total_seconds(), 3)
                if p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    return seen
                if "retry_due_after_kill_s" in seen and datetime.now(timezone.utc) > killed_at + timedelta(
                        seconds=seen["retry_due_after_kill_s"] + 3):
                    return seen
        await asyncio.sleep(0.05)
    return seen


async def resume(lab: Lab, point: str) -> dict:
    copy = lab.copies[0]
    _, follower = await _leader_and_follower(copy)
    tag = point.replace(" ", "-")
    hold = ACTIVITY_POINTS.get(point, "")
    workers = {}
    for k in (1, 2):
        proc = lab.start_worker(f"resume-{tag}-{k}", ("-m", "bench.held_worker"), BENCH_HOLD=hold,
                                BENCH_HOLD_S=str(HOLD_S))
        await lab.wait_polling(proc, f"resume-{tag}-{k}")
        workers[f"{proc.pid}@"] = proc
    handle = await lab.start(copy, follower, f"resume-{tag}", countdown_s=COUNTDOWN_S)
    victim = None
    while victim is None:
        victim = await (_activity_worker(handle, hold) if hold else _workflow_worker(handle, point))
        await asyncio.sleep(0.02)
    if point == "countdown":
        await asyncio.sleep(1)  # inside the timer, not at its start
    proc = next(p for prefix, p in workers.items() if victim.startswith(prefix))
    proc.send_signal(signal.SIGKILL)
    killed_at = datetime.now(timezone.utc)
    lab.say(f"  {point}: SIGKILLed worker {victim}")
    server_side = await _server_side(handle, hold, killed_at) if hold else {}
    third = lab.start_worker(f"resume-{tag}-3")
    await lab.wait_polling(third, f"resume-{tag}-3")
    third_polling_s = (datetime.now(timezone.utc) - killed_at).total_seconds()
    report = await final_report(handle)
    history = await read_history(handle)
    lab.stop_workers()
    if hold:  # the stage's own retry
        later = [a for a in history.activities if a.name == hold and a.started and a.started > killed_at]
    else:  # the run's next activity attempt: a retry the server dispatched (a load window lost with the worker),
        # or the first activity the workflow asked for on another worker
        later = [a for a in history.activities if a.started and a.started > killed_at]
    nxt = min(later, key=lambda a: a.started, default=None)
    # When the workflow itself ran again: the first activity it asked for after the SIGKILL (a workflow task on a
    # surviving worker, after the dead worker's sticky queue timed out).
    asked = min((a.scheduled for a in history.activities if a.scheduled > killed_at), default=None)
    return {
        "point": point, "killed_worker": victim,
        "next_activity": nxt.name if nxt else None, "next_attempt": nxt.attempt if nxt else None,
        "kill_to_next_activity_s": round((nxt.started - killed_at).total_seconds(), 3) if nxt else None,
        "retried_after": nxt.retried_after if nxt else None,
        "kill_to_workflow_asking_s": round((asked - killed_at).total_seconds(), 3) if asked else None,
        "kill_to_completion_s": round((history.closed - killed_at).total_seconds(), 3),
        "workflow_task_timeouts": history.workflow_task_timeouts,
        # Workflow tasks around the SIGKILL (scheduled, started, completed; s from it): one the dead worker held
        # times out, and the server may act on the run only after it.
        "workflow_tasks_near_kill": [[None if t is None else round((t - killed_at).total_seconds(), 3) for t in task]
                                     for task in history.workflow_tasks
                                     if task[0] and -1 < (task[0] - killed_at).total_seconds() < 4],
        "replacement_worker_polling_s": round(third_polling_s, 3),
        **server_side,
        "verdict": report.verdict, "reasons": report.reasons if report.verdict != "pass" else [],
    }


async def resume_all(lab: Lab, points: tuple[str, ...] = POINTS) -> dict:
    rows = []
    for point in points:
        rows.append(await resume(lab, point))
        r = rows[-1]
        lab.say(f"    → {r['next_activity']} attempt {r['next_attempt']} ran {r['kill_to_next_activity_s']}s after "
                f"the SIGKILL; run {r['verdict']}")
    values = [r["kill_to_next_activity_s"] for r in rows if r["kill_to_next_activity_s"] is not None]
    return {"points": rows, "kill_to_next_activity_s": summary(values),
            "all_within_2s": len(values) == len(rows) and max(values) <= 2.0,
            "all_passed": all(r["verdict"] == "pass" for r in rows)}
