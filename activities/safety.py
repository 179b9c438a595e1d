"""After the restore: read back every key the load wrote, then check the run's operation history for lost writes,
non-linearizable reads and tokens out of order (safety/checkers.py).

One activity for both, because both need the history, which is a file on this worker's disk; the check is CPU work,
run in a thread so the worker's event loop keeps answering queries and heartbeating.
"""

from __future__ import annotations

import asyncio
import time

from temporalio import activity

from activities.docker import off_loop, open_session
from activities.load import one_op
from activities.common import resolve_or_bad_input
from durable_chaos.contracts import SafetyReport, SafetyRequest
from durable_chaos.safety import checkers
from durable_chaos.safety.history import FINAL_PART, Op, parts, read_part, run_dir, size_bytes, write_part
from subjects import Session

# The subject is healthy again when this runs, but a member that just rejoined may still refuse for a moment.
FINAL_READ_ATTEMPTS = 3
FINAL_READ_TIMEOUT_S = 2.0
FINAL_READ_CONCURRENCY = 8


async def final_read(session: Session, keys: list[str]) -> list[Op]:
    """Read every key once more; a failed read is retried, and every attempt is recorded (the checkers take each
    key's last)."""
    gate = asyncio.Semaphore(FINAL_READ_CONCURRENCY)

    async def read(n: int, key: str) -> list[Op]:
        attempts = []
        async with gate:
            for attempt in range(FINAL_READ_ATTEMPTS):
                # Each attempt through another member (the session picks members by client number).
                op = await one_op(session, "read", n + attempt, key, None, 0, FINAL_READ_TIMEOUT_S,
                                  time.time_ns())
                op.final = True
                attempts.append(op)
                if op.outcome == "ok":
                    break
                await asyncio.sleep(0.2)
        return attempts

    return [op for ops in await asyncio.gather(*(read(n, key) for n, key in enumerate(keys))) for op in ops]


def _load_history(folder) -> tuple[list[Op], int]:
    window_parts = [p for p in parts(folder) if p.name != FINAL_PART]  # a retried check reads again
    return [op for p in window_parts for op in read_part(p)], len(window_parts)


@activity.defn
async def check_safety(req: SafetyRequest) -> SafetyReport:
    instance = resolve_or_bad_input(req.subject)
    info = activity.info()
    folder = run_dir(info.workflow_id, info.workflow_run_id)
    ops, found = await asyncio.to_thread(_load_history, folder)
    unknown_because = []
    if found < req.windows:
        unknown_because.append(f"the history holds {found} of the run's {req.windows} load windows: the others were "
                               f"lost with a worker that died, or ran on another worker (give workers a shared "
                               f"CHAOS_STATE_DIR)")
    async with open_session(instance) as session:
        if session.operations:
            keys = sorted({op.key for op in ops if op.kind == "write"})
            final = await final_read(session, keys)
            await asyncio.to_thread(write_part, folder / FINAL_PART, final)
            ops += final
        token_name, gapless = session.token_name, session.gapless_tokens
    ops.sort(key=lambda op: op.invoke_ns)

    def run_checkers() -> SafetyReport:
        return checkers.check(ops, token_name=token_name, gapless=gapless,
                              fault_start_ns=checkers.ns(req.fault_started_at),
                              fault_end_ns=checkers.ns(req.fault_ended_at), unknown_because=unknown_because)

    report = await off_loop(run_checkers)
    return report.model_copy(update={"history": str(folder), "history_bytes": size_bytes(folder)})
