"""Real client traffic against the subject: open-loop load, recorded operation by operation.

Operations are *due* at a fixed rate and sent when due, however long the system takes to answer: a client that
waited for each answer would send less exactly while the system is slow, and hide that slowness (coordinated
omission). At most `concurrency` operations are in flight; one due while the cap is reached is not sent, and the
history says so (`capped`). Latency is measured from when an operation was due.

Each window writes its operations to the run's history (safety/history.py), on the worker's disk, and returns a
`LoadWindow`, a few numbers derived from them, which is what enters the event history. What an operation is and
where it goes is the subject's business: the operations of its session's data model (safety/workloads.py picks
them; the checkers judge them afterwards), or its opaque `load_op`.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.common import resolve_or_bad_input
from activities.docker import open_session
from activities.guardrails import load_trip
from activities.sampling import probe_timeout, sample_all
from durable_chaos.contracts import LoadRequest, LoadWindow
from durable_chaos.ids import fault_tag
from durable_chaos.safety.checkers import percentile
from durable_chaos.safety.history import (
    CHECKED_AS,
    PART_SUFFIX,
    CheckedAs,
    Op,
    mark_sending,
    run_dir,
    write_checked_as,
    write_part,
)
from durable_chaos.safety.workloads import WORKLOADS
from subjects import CompareFailed, NotApplied, Session

# Sessions keep to the timeout they are given, but one operation may be several calls (a folder subject finds the
# role holder first): this bound only stops a session that does not keep to it from holding its window open.
OP_DEADLINE_FACTOR = 3
# Keys the load spreads over. Few enough that reads often follow writes of the same key (stale reads show), enough
# that a key rarely has more than a few operations in flight (the linearizability search stays small).
KEYS = 32
# A window picks up where the previous one's schedule ended: operations fall due between windows too (while the
# last answers of a window arrive, its part is written, and Temporal starts the next), and skipping them would
# lower the rate, the more the slower the system answers. Measured with bench/loadgen.py on a busy host: windows
# of 1 s took 1.16 s, so 100 ops/s became 75. The operations caught up are sent at once, their latency counted from
# when they were due; at most half the concurrency cap of them, so the burst leaves room for the ones due next. A
# longer gap is not caught up further, and windows that are not consecutive (a lost window, a worker restart) start
# afresh.
CATCH_UP_LIMIT_S = 5.0


def run_keys() -> tuple[str, ...]:
    """This run's keys: a run starts from keys nobody wrote, so their initial value is known (nothing). Named by a
    hash of the run, not a prefix of its id: run ids are time-ordered (UUIDv7), so runs a minute apart share one."""
    info = activity.info()
    return tuple(f"{fault_tag(info.workflow_id, info.workflow_run_id)}-k{i:02d}" for i in range(KEYS))


# Operations that change nothing: whether one reached the system does not matter, a failure is a failure.
READ_ONLY = frozenset({"read", "fetch", "drain", "op"})
CUT_OFF = "cut off: the window's attempt was cancelled"
_writing: set[asyncio.Task] = set()  # window parts being written: held here, as the loop keeps only weak refs


async def _send(session: Session, op: Op, seq: int, timeout: float) -> None:
    """Ask the session for `op`, and fill in what came back (the value read, the token)."""
    client, key, value = op.process, op.key, op.value
    if op.kind == "write":
        op.token = await session.write(client, key, value, timeout)
    elif op.kind == "read":
        reading = await session.read(client, key, timeout)
        op.value, op.token = reading.value, reading.token
    elif op.kind == "cas":
        op.token = await session.cas(client, key, value[0], value[1], timeout)
    elif op.kind == "publish":
        op.token = await session.publish(client, value, timeout)
    elif op.kind == "fetch":
        op.value = await session.fetch(client, timeout)
    elif op.kind == "txn":
        op.value = await session.transact(client, value, timeout)
    else:
        await session.load_op(client, seq, timeout)


def _invoke_ns(due_ns: int) -> int:
    """When an operation sent now counts as invoked: when it was due (a late send's wait counts in its latency), or
    now if that is earlier: uvloop's timers fire up to a millisecond before the wall-clock time they were set for,
    and an operation's effect must fall inside its recorded interval."""
    return min(due_ns, time.time_ns())


async def one_op(session: Session, kind: str, client: int, key: str | None, value, seq: int, timeout: float,
                 due_ns: int) -> Op:
    """Send one operation and record it as the client saw it, invoked at `_invoke_ns`."""
    op = Op(kind=kind, outcome="ok", invoke_ns=_invoke_ns(due_ns), complete_ns=0, key=key, value=value,
            process=client)
    try:
        async with asyncio.timeout(timeout * OP_DEADLINE_FACTOR):
            await _send(session, op, seq, timeout)
    except Exception as exc:  # noqa: BLE001 - any failure of the subject is data, not a crash of the load generator
        op.value = value  # a failed operation's value is what was asked
        op.outcome = "fail" if isinstance(exc, NotApplied) or kind in READ_ONLY else "info"
        # A compare that failed is the system's answer, not an error: it has none (`Op.served`).
        op.error = None if isinstance(exc, CompareFailed) else (str(exc) or type(exc).__name__)[:120]
    op.complete_ns = time.time_ns()
    return op


async def _open_loop(session: Session, req: LoadRequest, keys: tuple[str, ...], start_ns: int,
                     values_ns: int | None = None, ops: list[Op] | None = None) -> list[Op]:
    """Send the window's operations, each when due; returns them all, answered (or timed out), in `ops` if given:
    an attempt cut off mid-window (cancelled) still has there what it sent, the operations in flight as unknown.
    `values_ns` makes the values written unique (default: the start)."""
    rng = random.Random(start_ns)
    workload = WORKLOADS[session.model](keys, values_ns or start_ns) if session.model else None
    ops = [] if ops is None else ops
    in_flight: dict[asyncio.Task, Op] = {}  # each one's operation as it was sent

    def answered(task: asyncio.Task) -> None:
        del in_flight[task]
        if not task.cancelled():
            _answered(task.result(), ops, workload)

    interval_ns = int(1e9 / req.rate)
    try:
        for seq in range(int(req.window_s * req.rate)):
            due_ns = start_ns + seq * interval_ns
            wait = (due_ns - time.time_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            client = seq % req.concurrency
            kind, key, value = workload.next(rng, seq, client) if workload else ("op", None, None)
            if len(in_flight) >= req.concurrency:
                ops.append(Op(kind=kind, outcome="fail", invoke_ns=due_ns, complete_ns=due_ns, key=key, value=value,
                              process=client, error="not sent: concurrency cap reached", capped=True))
                continue
            task = asyncio.create_task(one_op(session, kind, client, key, value, seq, req.check_timeout_s, due_ns))
            in_flight[task] = Op(kind=kind, outcome="fail" if kind in READ_ONLY else "info",
                                 invoke_ns=_invoke_ns(due_ns), complete_ns=0, key=key, value=value,
                                 process=client, error=CUT_OFF)
            task.add_done_callback(answered)
        # Every operation ends within its timeout: wait for the last answers, so the part holds whole operations.
        while in_flight:
            await asyncio.wait(set(in_flight))
    finally:
        # Cancelled (the attempt timed out on a busy worker, or the worker shuts down): stop sending, and record
        # what was in flight as the client knows it: sent, unanswered.
        now = time.time_ns()
        for task, op in list(in_flight.items()):
            task.remove_done_callback(answered)
            if task.done() and not task.cancelled():
                _answered(task.result(), ops, workload)
            else:
                task.cancel()
                op.complete_ns = now
                ops.append(op)
        in_flight.clear()
    return ops


def _answered(op: Op, ops: list[Op], workload) -> None:
    ops.append(op)
    if workload is not None:
        workload.observe(op)


@activity.defn
async def run_load_window(req: LoadRequest) -> LoadWindow:
    """One window of load. The server gives a window lost with its worker (heartbeats stopped) one more attempt
    (workflows/policy.py `load_window`); a window that failed by itself would fail again, so its failure is made
    non-retryable here, and the workflow starts the next window a second after it began."""
    try:
        return await _window(req)
    except ApplicationError as err:
        if err.non_retryable:
            raise
        raise ApplicationError(err.message, *err.details, type=err.type, non_retryable=True) from err
    except Exception as err:  # noqa: BLE001 - whatever it was, it happened on a live worker
        raise ApplicationError(str(err) or type(err).__name__, type=type(err).__name__, non_retryable=True) from err


async def _window(req: LoadRequest) -> LoadWindow:
    instance = resolve_or_bad_input(req.subject)
    info = activity.info()
    start_ns = _first_due(req, time.time_ns())
    # One part per attempt: a retry can run beside the attempt it replaces (timed out on a starved worker, still
    # sending) from the same due time, and both attempts' operations happened.
    part = run_dir(info.workflow_id, info.workflow_run_id) / f"{start_ns}-{info.attempt}{PART_SUFFIX}"
    # On the loop, not in a thread: an empty file takes microseconds, and at 20 copies a thread of the default
    # executor can take seconds to come free, which would hold the window's first operation.
    mark_sending(part)
    ops: list[Op] = []
    how: CheckedAs | None = None
    keep: asyncio.Task | None = None  # the part's write, once asked for
    try:
        async with open_session(instance) as session:
            how = checked_as(session)
            # A retried window may start at the same moment as the attempt it replaces (both catch up from the same
            # due time), and that attempt's writes may have landed: its values must differ, or two writes of one
            # value would look like one (workloads make values from the start in milliseconds).
            await _open_loop(session, req, run_keys(), start_ns, start_ns + (info.attempt - 1) * 1_000_000, ops)
        end_ns = time.time_ns()
        ops.sort(key=lambda op: op.invoke_ns)
        # The write waits for a thread of the default executor, which at 20 copies can take longer than the
        # attempt's start-to-close time. Shielded: a cancel then must not take it out of the executor's queue (it
        # did, and the attempt left no part); the safety check, which reads the parts from that same queue, comes
        # after it.
        keep = asyncio.create_task(asyncio.to_thread(_keep, part, ops, how))
        _writing.add(keep)
        keep.add_done_callback(_writing.discard)
        # The hypothesis's own probes, asked once, as late as the window can (sampling.py), while its part is
        # written.
        samples, _ = await asyncio.gather(sample_all(req.probes, instance, probe_timeout(req.window_s)),
                                          asyncio.shield(keep))
    except asyncio.CancelledError:
        if keep is None:
            # Cut off while sending: its part still holds what it sent, so the history stays whole (its mark says
            # a part is due). On the loop: a few milliseconds, and nothing is waiting for it.
            ops.sort(key=lambda op: op.invoke_ns)
            _keep(part, ops, how)
        raise

    answered = sorted(op.latency_ms for op in ops if op.served)
    last_ok_ns = max((op.complete_ns for op in ops if op.served), default=None)
    elapsed = (end_ns - start_ns) / 1e9
    window = LoadWindow(
        start=_at(start_ns),
        end=_at(end_ns),
        ops=len(answered),
        errors=len(ops) - len(answered),
        ops_per_s=round(len(answered) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=percentile(answered, 50),
        p95_ms=percentile(answered, 95),
        p99_ms=percentile(answered, 99),
        last_ok_at=_at(last_ok_ns) if last_ok_ns else None,
        rate=req.rate,
        probes=samples,
    )
    if req.stop is not None:
        window.tripped = load_trip(req.stop, req.recent, window, req.last_ok_before, req.load_since)
    return window


def checked_as(session: Session) -> CheckedAs:
    """How this subject's history is to be checked, as its session says (the model and what it promises)."""
    return CheckedAs(session.model, session.isolation, session.token_name, session.gapless_tokens,
                     session.keeps_delivered)


def _keep(part, ops: list[Op], how: CheckedAs | None) -> None:
    """Write the window's part, and with the run's first one how to check them: a run that dies before its safety
    check (terminated, say) leaves a folder `starter.py check` still judges as the run would have."""
    write_part(part, ops)
    if how is not None and not (part.parent / CHECKED_AS).exists():
        write_checked_as(part.parent, how)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _first_due(req: LoadRequest, now_ns: int) -> int:
    """When the window's first operation is due (see CATCH_UP_LIMIT_S)."""
    if req.due_from is None:
        return now_ns
    due_ns = (req.due_from - _EPOCH) // timedelta(microseconds=1) * 1000  # exact, unlike timestamp() * 1e9
    if not 0 <= now_ns - due_ns <= CATCH_UP_LIMIT_S * 1e9:
        return now_ns
    return max(due_ns, now_ns - round(req.concurrency // 2 * 1e9 / req.rate))


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)
