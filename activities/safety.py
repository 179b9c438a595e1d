"""After the restore: the final phase (read back every key the load wrote, or drain the queue from every replica),
then check the run's operation history against the subject's data model (safety/checkers.py).

One activity for both, because both need the history, which is a file on this worker's disk; the check is CPU work,
run in a thread so the worker's event loop keeps answering queries and heartbeating.
"""

from __future__ import annotations

import asyncio
import time

from temporalio import activity

from activities.docker import off_loop, open_session
from activities.load import checked_as, one_op
from activities.common import resolve_or_bad_input
from durable_chaos.contracts import SafetyReport, SafetyRequest
from durable_chaos.safety import checkers
from durable_chaos.safety.history import (
    FINAL_PART,
    Op,
    attempts_expected,
    cut_off_attempts,
    parts,
    read_part,
    run_dir,
    size_bytes,
    write_checked_as,
    write_part,
)
from durable_chaos.safety.jepsen import FaultWindow
from durable_chaos.safety.list_append import appended_keys
from subjects import Session

# The subject is healthy again when this runs, but a member that just rejoined may still refuse for a moment.
FINAL_READ_ATTEMPTS = 3
FINAL_READ_TIMEOUT_S = 2.0
FINAL_READ_CONCURRENCY = 8


async def _final(session: Session, asks: list[tuple[str, str | None, object]]) -> list[Op]:
    """Ask each (f, key, value) once more; a failure is retried, and every attempt is recorded (the checkers take
    each key's last)."""
    gate = asyncio.Semaphore(FINAL_READ_CONCURRENCY)

    async def ask(n: int, f: str, key: str | None, value: object) -> list[Op]:
        attempts = []
        async with gate:
            for attempt in range(FINAL_READ_ATTEMPTS):
                # Each attempt through another member (the session picks members by client number).
                op = await one_op(session, f, n + attempt, key, value, 0, FINAL_READ_TIMEOUT_S, time.time_ns())
                op.final = True
                attempts.append(op)
                if op.outcome == "ok":
                    break
                await asyncio.sleep(0.2)
        return attempts

    return [op for ops in await asyncio.gather(*(ask(n, *a) for n, a in enumerate(asks))) for op in ops]


async def final_reads(session: Session, ops: list[Op]) -> list[Op]:
    """Registers: read every key written."""
    return await _final(session, [("read", key, None) for key in sorted({op.key for op in ops if op.kind in
                                                                         ("write", "cas")})])


async def final_list_reads(session: Session, ops: list[Op]) -> list[Op]:
    """List-append: read every key appended to, each in a transaction of its own."""
    keys = sorted({key for op in ops for key in appended_keys(op)})
    return await _final(session, [("txn", None, [["r", key, None]]) for key in keys])


async def final_drain(session: Session, ops: list[Op]) -> list[Op]:
    """A queue: everything each replica holds, one operation per replica (a failed drain is one failed op)."""
    for attempt in range(FINAL_READ_ATTEMPTS):
        began = time.time_ns()
        try:
            held = await session.drain(FINAL_READ_TIMEOUT_S * 5)
        except Exception as exc:  # noqa: BLE001 - a subject that cannot be drained leaves the check unknown
            if attempt + 1 == FINAL_READ_ATTEMPTS:
                return [Op(kind="drain", outcome="fail", invoke_ns=began, complete_ns=time.time_ns(), final=True,
                           error=(str(exc) or type(exc).__name__)[:120])]
            await asyncio.sleep(0.5)
            continue
        done = time.time_ns()
        return [Op(kind="drain", outcome="fail", invoke_ns=began, complete_ns=done, process=n, final=True,
                   error=f"{replica}: {messages}"[:120]) if isinstance(messages, str) else
                Op(kind="drain", outcome="ok", invoke_ns=began, complete_ns=done, process=n, final=True,
                   value={"replica": replica, "messages": messages})
                for n, (replica, messages) in enumerate(sorted(held.items()))]
    return []


# The final phase of each data model, after the restore.
FINAL_PHASES = {"register": final_reads, "cas-register": final_reads, "list-append": final_list_reads,
                "queue": final_drain}


def _load_history(folder, windows: int) -> tuple[list[Op], int, int, int]:
    """The windows' operations, how many parts hold them, how many a complete history would hold, and how many
    attempts began sending and left none."""
    window_parts = [p for p in parts(folder) if p.name != FINAL_PART]  # a retried check reads again
    return ([op for p in window_parts for op in read_part(p).ops], len(window_parts),
            attempts_expected(folder, windows), len(cut_off_attempts(folder)))


@activity.defn
async def check_safety(req: SafetyRequest) -> SafetyReport:
    instance = resolve_or_bad_input(req.subject)
    info = activity.info()
    folder = run_dir(info.workflow_id, info.workflow_run_id)
    ops, found, expected, cut_off = await asyncio.to_thread(_load_history, folder, req.windows)
    unknown_because = []
    if found < expected:
        why = ["lost with a worker that died, or ran on another worker (give workers a shared CHAOS_STATE_DIR)"]
        if cut_off:
            why.insert(0, f"{cut_off} cut off while sending (timed out on a busy worker)")
        unknown_because.append(f"the history holds {found} of the run's {expected} load window attempts: the others "
                               f"were {'; or '.join(why)}")
    start_ns, end_ns = checkers.ns(req.fault_started_at), checkers.ns(req.fault_ended_at)
    # The fault window goes in the history too (nemesis lines), for `starter.py check --html` to shade.
    faults = [FaultWindow(start_ns, end_ns, "fault")] if start_ns is not None else []
    async with open_session(instance) as session:
        how = checked_as(session)
        final = await FINAL_PHASES[how.model](session, ops) if how.model else []

    def keep() -> None:
        write_part(folder / FINAL_PART, final, faults)
        write_checked_as(folder, how)  # again: a run's first window wrote it, and the session at the end says last

    await asyncio.to_thread(keep)
    ops += final
    ops.sort(key=lambda op: op.invoke_ns)

    def run_checkers() -> SafetyReport:
        return checkers.check(ops, model=how.model, isolation=how.isolation, token_name=how.token_name,
                              gapless=how.gapless, keeps_delivered=how.keeps_delivered, fault_start_ns=start_ns,
                              fault_end_ns=end_ns, unknown_because=unknown_because)

    report = await off_loop(run_checkers)
    return report.model_copy(update={"history": str(folder), "history_bytes": size_bytes(folder)})
