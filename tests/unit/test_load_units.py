"""The load generator's parts that need no cluster: what the etcd session's load client records for each kind of
answer (against tiny HTTP servers on 127.0.0.1), and where a window's schedule starts when it carries on the
previous one's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvloop
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.load import (
    CATCH_UP_LIMIT_S,
    CUT_OFF,
    OP_DEADLINE_FACTOR,
    _first_due,
    _open_loop,
    one_op,
    run_load_window,
)
from durable_chaos.contracts import LoadRequest, SubjectRef
from durable_chaos.safety.availability import availability
from durable_chaos.safety.history import (
    PART_SUFFIX,
    attempts_expected,
    mark_sending,
    parts,
    read_part,
    run_dir,
    write_part,
)
from subjects import Session
from subjects.etcd import EtcdSession

S = 1_000_000_000


async def _server(answer, close_after_answer: bool = False):
    """An HTTP/1.1 server on a free local port; `answer(path)` gives the raw response bytes."""
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            writer.write(answer(head.split(b" ")[1].decode()))
            await writer.drain()
            if close_after_answer:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


def _json(body: bytes, status: str = "200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(), len(body), body)


async def test_etcd_load_answers_are_recorded_as_the_client_saw_them():
    """Through the etcd session's load client and `one_op`, as the load generator records them: an answer is `ok`
    with its revision, an error status is `info` (the write may have been applied), silence past the timeout is
    `info`, and a refused connection is `fail` (nothing was sent)."""
    server, url, connections = await _server(
        lambda path: _json(b'{"header":{"revision":"7"}}') if path == "/v3/kv/put"
        else _json(b'{"message":"etcdserver: too many requests"}', "503 Service Unavailable"))
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    sessions = {name: EtcdSession({"etcd1": address}) for name, address in [
        ("answers", url), ("silent", f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"),
        ("refused", f"http://127.0.0.1:{closed_port}")]}
    try:
        ops = [await one_op(sessions["answers"], "write", 0, "k", "v", n, 2, time.time_ns()) for n in range(3)]
        assert [(op.outcome, op.token) for op in ops] == [("ok", 7)] * 3
        assert len(connections) == 1  # kept alive: the load opens no connection per operation
        busy = await one_op(sessions["answers"], "read", 0, "k", None, 0, 2, time.time_ns())
        assert busy.outcome == "fail" and "HTTP 503: etcdserver: too many requests" in busy.error
        silence = await one_op(sessions["silent"], "write", 0, "k", "v", 0, 0.2, time.time_ns())
        assert silence.outcome == "info"
        refused = await one_op(sessions["refused"], "write", 0, "k", "v", 0, 2, time.time_ns())
        assert refused.outcome == "fail" and refused.error == "unreachable (connection refused)"
    finally:
        for session in sessions.values():
            await session.aclose()
        server.close()
        silent.close()


async def test_a_swap_etcd_refuses_is_an_answer_not_an_error():
    """etcd's transaction answers `succeeded` (swapped) or leaves it out (the key held another value): the second
    is the outcome `fail` (it did not take effect) with no error, which the error rate does not count."""
    server, url, _ = await _server(lambda path: _json(b'{"header":{"revision":"9"}}') if path.startswith("/other")
                                   else _json(b'{"header":{"revision":"9"},"succeeded":true}'))
    session = EtcdSession({"etcd1": url})
    try:
        swapped = await one_op(session, "cas", 0, "k", ["a", "b"], 0, 2, time.time_ns())
        assert (swapped.outcome, swapped.token, swapped.served) == ("ok", 9, True)
        session._urls = [url + "/other"]  # the same server, answering without `succeeded`
        refused = await one_op(session, "cas", 0, "k", ["a", "c"], 0, 2, time.time_ns())
        assert (refused.outcome, refused.error, refused.served, refused.value) == ("fail", None, True, ["a", "c"])
        assert availability([swapped, refused]).error_rate == 0
    finally:
        await session.aclose()
        server.close()


class _Hanging(Session):
    """A session whose writes never answer and are bounded by no timer of their own (as a subject's session may be):
    only the operation's own deadline ends them."""
    model = "register"

    async def check(self, timeout: float, fail_fast: bool = False):
        raise NotImplementedError

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        await asyncio.sleep(3600)
        return 1


async def test_an_operation_that_never_answers_ends_at_its_deadline_as_unknown_and_a_cancel_still_ends_it():
    """Each operation has a deadline of its own (`OP_DEADLINE_FACTOR` times the check timeout), whatever its session
    does: past it, a write is recorded as unknown (it may have landed). A cancel from outside (the window's attempt
    ended) is not a deadline: it ends the operation's task."""
    t0 = time.monotonic()
    op = await one_op(_Hanging(), "write", 0, "k", "v", 0, 0.05, time.time_ns())
    took = time.monotonic() - t0
    assert (op.outcome, op.error, op.value) == ("info", "TimeoutError", "v")
    assert 0.05 * OP_DEADLINE_FACTOR <= took < 2, took
    task = asyncio.ensure_future(one_op(_Hanging(), "write", 0, "k", "v", 0, 60, time.time_ns()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_operation_answered_in_time_leaves_no_deadline_behind():
    """The deadline's timer goes with the operation: the task that sent it is not cancelled later."""
    server, url, _ = await _server(lambda path: _json(b'{"header":{"revision":"3"}}'))
    session = EtcdSession({"etcd1": url})
    try:
        op = await one_op(session, "write", 0, "k", "v", 0, 0.02, time.time_ns())
        assert op.outcome == "ok"
        await asyncio.sleep(0.02 * OP_DEADLINE_FACTOR + 0.1)  # would be cancelled here
    finally:
        await session.aclose()
        server.close()


async def _refusing_port() -> int:
    """A local port nothing listens on any more: every operation sent there is refused at once."""
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    return port


def _req(due_from_ns: int | None, rate: float = 100, concurrency: int = 16) -> LoadRequest:
    due_from = None if due_from_ns is None else datetime.fromtimestamp(due_from_ns / S, tz=UTC)
    return LoadRequest(subject=SubjectRef(name="etcd"), window_s=1, concurrency=concurrency, check_timeout_s=0.5,
                       rate=rate, due_from=due_from)


def test_a_window_carries_on_the_previous_schedule_and_catches_up_at_most_half_the_cap():
    now = 1_800_000_000 * S
    assert _first_due(_req(None), now) == now  # the first window
    assert _first_due(_req(now - S // 20), now) == now - S // 20  # 50 ms between windows: 5 operations caught up
    # 1 s between windows at 100 ops/s is 100 operations due: only 8 (half of 16) are caught up.
    assert _first_due(_req(now - S), now) == now - 8 * S // 100
    # Not consecutive (a lost window, a worker restart) or from the future (another worker's clock): start afresh.
    assert _first_due(_req(now - int((CATCH_UP_LIMIT_S + 1) * S)), now) == now
    assert _first_due(_req(now + S), now) == now


def test_on_the_workers_event_loop_no_operation_is_recorded_as_sent_after_it_was(tmp_path: Path):
    """`python worker.py` runs on uvloop, whose timers fire up to a millisecond before the wall-clock time they were
    set for. An operation sent that early and refused at once (well under a millisecond) was recorded as invoked
    at its due time, after its own answer: its part could not be read back ("a completion of process P with no
    invoke before it") and, had it been answered, its effect fell outside its recorded interval."""
    async def window():
        closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        session = EtcdSession({"etcd1": f"http://127.0.0.1:{port}"})
        try:
            return await _open_loop(session, _req(None, rate=500, concurrency=64), ("k1", "k2"), time.time_ns())
        finally:
            await session.aclose()

    ops = uvloop.run(window())
    refused = [op for op in ops if op.error == "unreachable (connection refused)"]
    assert len(ops) == 500 and len(refused) > 250 and all(op.outcome == "fail" for op in ops)
    assert all(op.invoke_ns <= op.complete_ns for op in ops), \
        sum(op.invoke_ns > op.complete_ns for op in ops)
    write_part(tmp_path / "window.part", ops)
    assert len(read_part(tmp_path / "window.part").ops) == 500


async def test_two_attempts_of_one_window_that_start_together_both_keep_their_operations(tmp_path, monkeypatch):
    """A window's retry can run beside the attempt it replaces (that one timed out on a starved worker but is still
    sending) and start at the same due time. Both attempts' operations happened, so the history keeps both: one
    part each. They used to share the part's file name, and one attempt's operations were lost (or its rename found
    the other's file gone)."""
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))
    port = await _refusing_port()
    # Due 0.1 s ago, at 20 ops/s with 64 in flight: both attempts catch up from that due time as long as each
    # starts within 1.6 s of it (half the cap), however slow the host.
    req = _req(time.time_ns() - S // 10, rate=20, concurrency=64).model_copy(
        update={"subject": SubjectRef(name="etcd", project="t-two-attempts", port_base=port - 1)})
    envs = [ActivityEnvironment() for _ in range(2)]
    for attempt, env in enumerate(envs, start=1):
        env.info = dataclasses.replace(env.info, attempt=attempt, workflow_id="two-attempts", workflow_run_id="r1")
    first, second = await asyncio.gather(*(env.run(run_load_window, req) for env in envs))
    assert first.start == second.start  # both caught up from the same due time
    folder = run_dir("two-attempts", "r1")
    kept = [op for part in parts(folder) for op in read_part(part).ops]
    assert len(parts(folder)) == 2
    assert len(kept) == first.errors + second.errors == 2 * 20
    assert attempts_expected(folder, windows=1) == 2  # the workflow saw one window: both parts are whole


async def test_a_window_retried_after_its_worker_died_leaves_the_history_incomplete(tmp_path, monkeypatch):
    """The server runs a window lost with its worker once more (workflows/policy.py). The lost attempt wrote no part,
    and its operations may have landed: the safety check must count it missing, although the workflow saw one
    window."""
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))
    port = await _refusing_port()
    req = _req(None, rate=20).model_copy(
        update={"window_s": 0.2, "subject": SubjectRef(name="etcd", project="t-retried", port_base=port - 1)})
    windows = []
    for attempt in (1, 2):  # the first window, then the retry of a second one whose first attempt died
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, attempt=attempt, workflow_id="retried", workflow_run_id="r1")
        windows.append(await env.run(run_load_window, req))
    written = parts(run_dir("retried", "r1"))
    assert len(written) == 2 and attempts_expected(run_dir("retried", "r1"), windows=2) == 3


async def test_an_attempt_cut_off_while_sending_keeps_what_it_sent_and_a_mark_without_a_part_counts_missing(
        tmp_path, monkeypatch):
    """A window's attempt that times out on a starved worker is cancelled there once the worker learns of it. It
    used to write no part, while an earlier attempt's late part made the parts add up: the check judged, and a value
    the missing attempt wrote, read back later, was called a linearizability violation (20 etcd copies on one
    worker, session 28: 3 runs of 20). A cut-off attempt now writes its part, with what it sent and the writes in
    flight as unknown (they may have landed); and an attempt that began sending and left no part at all (its
    worker killed) still makes the history incomplete, however the parts add up."""
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    port = silent.sockets[0].getsockname()[1]
    req = _req(None, rate=20).model_copy(
        update={"window_s": 0.5, "subject": SubjectRef(name="etcd", project="t-cut-off", port_base=port - 1)})
    envs = [ActivityEnvironment() for _ in range(2)]
    for attempt, env in enumerate(envs, start=1):
        env.info = dataclasses.replace(env.info, attempt=attempt, workflow_id="cut-off", workflow_run_id="r1")
    try:
        await envs[0].run(run_load_window, req)  # attempt 1: every operation timed out
        second = asyncio.ensure_future(envs[1].run(run_load_window, req))  # attempt 2: cancelled while sending
        await asyncio.sleep(0.2)
        envs[1].cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
    finally:
        silent.close()
    folder = run_dir("cut-off", "r1")
    cut = [p for p in parts(folder) if p.name.endswith(f"-2{PART_SUFFIX}")]
    assert len(parts(folder)) == 2 and len(cut) == 1
    sent = read_part(cut[0]).ops  # etcd1 never answers; etcd2 and etcd3 refuse
    cut_off = [op for op in sent if op.error == CUT_OFF]
    assert cut_off and all(op.error == "unreachable (connection refused)" for op in sent if op not in cut_off)
    assert all(op.outcome == ("fail" if op.kind == "read" else "info") for op in cut_off)
    # The workflow saw one window (it failed after two attempts): both parts are whole.
    assert attempts_expected(folder, windows=1) == 2
    # An attempt that began sending and left nothing: counted missing, although the parts add up.
    mark_sending(folder / f"123-2{PART_SUFFIX}")
    assert attempts_expected(folder, windows=1) == 3


async def test_a_part_waiting_for_a_busy_executor_is_written_though_its_attempt_is_cancelled(tmp_path, monkeypatch):
    """At 20 copies a window's part waits for a thread of the default executor, which Docker calls hold for
    seconds; its attempt then times out and is cancelled. The cancel took the write out of the executor's queue,
    and the attempt left no part although its operations were sent (20 etcd copies, session 28: 31 runs of 60
    said data safety unknown). The write must still happen once a thread comes free."""
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))
    port = await _refusing_port()
    req = _req(None, rate=20).model_copy(
        update={"window_s": 0.2, "subject": SubjectRef(name="etcd", project="t-busy", port_base=port - 1)})
    loop = asyncio.get_running_loop()
    busy, free = concurrent.futures.ThreadPoolExecutor(1), threading.Event()
    busy.submit(free.wait)  # the one thread, held as a `docker` call holds one

    async def to_busy_thread(fn, *args):
        return await loop.run_in_executor(busy, functools.partial(fn, *args))

    monkeypatch.setattr(asyncio, "to_thread", to_busy_thread)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="busy", workflow_run_id="r1")
    window = asyncio.ensure_future(env.run(run_load_window, req))
    await asyncio.sleep(0.5)  # sent, now waiting for the thread
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await window
    free.set()
    await asyncio.get_running_loop().run_in_executor(busy, lambda: None)  # the queue, in order: the write first
    busy.shutdown()
    written = parts(run_dir("busy", "r1"))
    assert len(written) == 1 and len(read_part(written[0]).ops) == 4, written
    assert attempts_expected(run_dir("busy", "r1"), windows=1) == 1


async def test_a_window_that_fails_by_itself_is_not_retried(tmp_path, monkeypatch):
    """The server retries a window once, for the attempt lost with its worker (workflows/policy.py). A window that
    failed on a live worker would fail again, and its retry would run beside the next window the workflow starts:
    its failure says non-retryable. Here the run's history cannot be written (its folder is a file)."""
    monkeypatch.setenv("CHAOS_STATE_DIR", str(tmp_path))
    (tmp_path / "histories").write_text("not a folder")
    port = await _refusing_port()
    req = _req(None, rate=20).model_copy(
        update={"window_s": 0.2, "subject": SubjectRef(name="etcd", project="t-fails", port_base=port - 1)})
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(run_load_window, req)
    assert failed.value.non_retryable and failed.value.type == "NotADirectoryError", failed.value
