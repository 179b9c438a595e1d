"""What the benchmark reads: a run's event history (stage timings), percentiles, and a process's CPU and memory.

Stage timings come from the server's own timestamps in the event history, so the workflow side of the overhead
comparison is measured by Temporal, not by the benchmark's guess of when a stage ran.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client, WorkflowHandle

# Activities that are stages of a run, in run order; load windows run alongside and are not stages.
STAGES = ("preflight", "inject_fault", "detect_violation", "gather_evidence", "diagnose", "restore_fault",
          "wait_healthy")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _time(event) -> datetime:
    return event.event_time.ToDatetime(tzinfo=timezone.utc)


@dataclass
class Attempt:
    """One activity as the history tells it; `started` is the start of its last attempt."""

    name: str
    scheduled: datetime
    started: datetime | None = None
    attempt: int = 1
    closed: datetime | None = None
    outcome: str = "pending"
    result: Any = None  # the raw payloads of a completed activity
    timeout_type: str | None = None  # of a timed-out activity: HEARTBEAT, START_TO_CLOSE, ...
    retried_after: str | None = None  # a retried activity: why its previous attempt ended (a timeout type or error)
    identity: str | None = None  # the worker that ran the last attempt
    # Why earlier attempts ended (the server records the last one on the next start) and why the last one did.
    failures: list[str] = field(default_factory=list)


@dataclass
class History:
    started: datetime
    closed: datetime | None = None
    activities: list[Attempt] = field(default_factory=list)
    workflow_task_open: bool = False  # scheduled or started, not yet completed
    workflow_task_timeouts: int = 0
    # by kind: SCHEDULE_TO_START (the sticky queue's worker did not take it in time) or START_TO_CLOSE (taken,
    # not answered within the workflow task timeout)
    workflow_task_timeout_kinds: dict[str, int] = field(default_factory=dict)
    workflow_worker: str | None = None  # the worker that started the latest workflow task (holds it in its cache)
    countdown_started: bool = False
    workflow_task_s: list[float] = field(default_factory=list)  # each completed workflow task: started → completed
    workflow_tasks: list[tuple] = field(default_factory=list)  # (scheduled, started, completed or None) each

    def first(self, name: str) -> Attempt | None:
        return next((a for a in self.activities if a.name == name), None)

    def stage_seconds(self) -> dict[str, float]:
        """`stage_spans` of this run, from the server's timestamps."""
        ends = {name: a.closed for name in STAGES if (a := self.first(name)) is not None and a.closed is not None}
        windows = [a.closed for a in self.activities if a.name == "run_load_window" and a.closed is not None]
        return stage_spans(self.started, ends, max(windows, default=None), self.closed)

    def orchestration_gaps(self) -> dict[str, list[float]]:
        """Where orchestration spends time between stages: from one stage's end to the next one's scheduling (a
        workflow task round trip) and from scheduling to a worker starting it (activity dispatch). The round trip is
        split in four: the server turning the result into a workflow task, handing it to the worker, the worker
        running workflow code, and further workflow tasks before the stage is scheduled (the fault guard's start)."""
        gaps: dict[str, list[float]] = {
            "workflow_task_s": [], "activity_dispatch_s": [], "  server: result → task_s": [],
            "  task to the worker_s": [], "  worker: workflow code_s": [], "  further workflow tasks_s": []}
        prev = self.started
        baseline = self.first("run_load_window")
        for name in STAGES:
            a = self.first(name)
            if a is None or a.closed is None or a.started is None:
                continue
            if name == "inject_fault" and baseline is not None and baseline.closed is not None:
                # The kill waits for the first load window (the baseline); that wait is the run's, not overhead.
                prev = max(prev, baseline.closed)
            gaps["workflow_task_s"].append((a.scheduled - prev).total_seconds())
            gaps["activity_dispatch_s"].append((a.started - a.scheduled).total_seconds())
            task = next((t for t in self.workflow_tasks if t[0] >= prev and t[2] is not None), None)
            if task is not None and task[2] <= a.scheduled:
                scheduled, started, completed = task
                gaps["  server: result → task_s"].append((scheduled - prev).total_seconds())
                gaps["  task to the worker_s"].append((started - scheduled).total_seconds())
                gaps["  worker: workflow code_s"].append((completed - started).total_seconds())
                gaps["  further workflow tasks_s"].append((a.scheduled - completed).total_seconds())
            prev = a.closed
        return gaps


def stage_spans(started: datetime, ends: dict[str, datetime], load_end: datetime | None,
                closed: datetime | None) -> dict[str, float]:
    """Seconds from the end of the previous stage (or the start of the run) to the end of each stage in `STAGES`
    order; then the load's tail (the window in flight after the last stage runs to its end: 0 to 1 s, by chance of
    phase) and the finish (the safety check, the report) to the run's close. Both sides of the overhead comparison
    are timed this way (bench/plain.py), so stages that overlap count alike."""
    out, prev = {}, started
    for name in STAGES:
        if name in ends:
            out[name], prev = (ends[name] - prev).total_seconds(), ends[name]
    if load_end is not None and load_end > prev:
        out["load_tail"], prev = (load_end - prev).total_seconds(), load_end
    if closed is not None:
        out["finish"] = (closed - prev).total_seconds()
    return out


def _timeout_type(failure) -> str | None:
    """HEARTBEAT, START_TO_CLOSE, ... for a timeout; None for any other failure."""
    if not failure.HasField("timeout_failure_info"):
        return None
    return TimeoutType.Name(failure.timeout_failure_info.timeout_type).removeprefix("TIMEOUT_TYPE_")


def _why(failure) -> str:
    """A failure in a word or line: the timeout's type or the error message."""
    return _timeout_type(failure) or failure.message[:120]


async def read_history(handle: WorkflowHandle) -> History:
    history: History | None = None
    by_id: dict[int, Attempt] = {}
    task_started = None
    async for e in handle.fetch_history_events():
        t = e.event_type
        if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            history = History(started=_time(e))
        elif t in (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED):
            history.closed = _time(e)
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            history.workflow_task_open = True
            history.workflow_tasks.append((_time(e), None, None))
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            history.workflow_worker = e.workflow_task_started_event_attributes.identity
            task_started = _time(e)
            history.workflow_tasks[-1] = (history.workflow_tasks[-1][0], task_started, None)
        elif t == EventType.EVENT_TYPE_TIMER_STARTED:
            history.countdown_started = True
        elif t in (EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED):
            history.workflow_task_open = False
            history.workflow_task_s.append((_time(e) - task_started).total_seconds())
            if t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                history.workflow_tasks[-1] = (*history.workflow_tasks[-1][:2], _time(e))
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            history.workflow_task_open = False
            history.workflow_task_timeouts += 1
            kind = TimeoutType.Name(e.workflow_task_timed_out_event_attributes.timeout_type)
            kind = kind.removeprefix("TIMEOUT_TYPE_")
            history.workflow_task_timeout_kinds[kind] = history.workflow_task_timeout_kinds.get(kind, 0) + 1
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = Attempt(name=e.activity_task_scheduled_event_attributes.activity_type.name, scheduled=_time(e))
            by_id[e.event_id] = a
            history.activities.append(a)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = e.activity_task_started_event_attributes
            a = by_id[attrs.scheduled_event_id]
            # Written when the attempt ends, but stamped with the time the attempt started.
            a.started, a.attempt, a.identity = _time(e), attrs.attempt, attrs.identity
            if attrs.attempt > 1 and attrs.HasField("last_failure"):
                a.retried_after = _why(attrs.last_failure)
            if attrs.HasField("last_failure"):
                a.failures.append(f"attempt {attrs.attempt - 1}: {_failure(attrs.last_failure)}")
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = e.activity_task_completed_event_attributes
            a = by_id[attrs.scheduled_event_id]
            a.closed, a.outcome, a.result = _time(e), "completed", attrs.result.payloads
        elif t in (EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT):
            attrs = (e.activity_task_failed_event_attributes if t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                     else e.activity_task_timed_out_event_attributes)
            a = by_id[attrs.scheduled_event_id]
            a.closed, a.outcome = _time(e), "failed" if t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED else "timed out"
            a.timeout_type = _timeout_type(attrs.failure)
            a.failures.append(f"attempt {a.attempt} (last): {_failure(attrs.failure)}")
    return history


def _failure(failure) -> str:
    """A failure in a few words: its message, and the timeout's kind for a timeout (heartbeat, start-to-close)."""
    text = failure.message
    if kind := _timeout_type(failure):
        text += f" ({kind})"
    if failure.HasField("cause"):
        text += f" <- {_failure(failure.cause)}"
    return text[:300]


async def decode(client: Client, attempt: Attempt, kind: type):
    [value] = await client.data_converter.decode(attempt.result, [kind])
    return value


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float | int | None]:
    r = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {"n": len(values), "min": r(min(values, default=None)), "p50": r(percentile(values, 50)),
            "p95": r(percentile(values, 95)), "max": r(max(values, default=None))}


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float  # the process itself
    children_cpu_s: float  # reaped children: the docker CLI calls python-on-whales makes
    rss_mb: float
    peak_rss_mb: float


def sample_process(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name (which may contain spaces) start at field 3.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    mem = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                mem[key] = int(value.split()[0]) / 1024
    return ProcSample(cpu_s=(utime + stime) / CLOCK_TICKS, children_cpu_s=(cutime + cstime) / CLOCK_TICKS,
                      rss_mb=round(mem["VmRSS"], 1), peak_rss_mb=round(mem["VmHWM"], 1))


def thread_cpu_s(pid: int, tid: int) -> float:
    """CPU seconds of one thread of a process (the main thread: tid == pid)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_wait_s(pid: int, tid: int) -> float:
    """Seconds one thread has spent runnable but waiting for a CPU (schedstat's run-queue time): a process starved
    by the machine shows here, not in its own CPU time."""
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat: the machine's load, whoever causes it."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def cpu_by_command() -> dict[str, float]:
    """CPU seconds so far of every process alive now, summed by command name (etcd, dockerd, temporal, python...):
    the difference of two readings says who used the machine in between. A process that ended in between is missing
    (its parent's reaped-children time holds it), so this is a lower bound per name."""
    out: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        name = head.partition("(")[2]
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def cpu_used_by_command(before: dict[str, float], after: dict[str, float], top: int = 10) -> dict[str, float]:
    """The `top` command names by CPU seconds used between two `cpu_by_command` readings."""
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    return {name: round(s, 2) for name, s in sorted(used.items(), key=lambda kv: -kv[1])[:top] if s > 0}


# The Temporal server's own counters (its /metrics, `--metrics-port`): the RPCs its frontend served and the calls it
# made to its database, by operation. They say what the server's CPU went on.
SERVER_COUNTERS = ("service_requests", "persistence_requests")


def server_requests(metrics_url: str) -> dict[str, float]:
    """`SERVER_COUNTERS` now, summed by (counter, operation): 'service_requests RecordActivityTaskHeartbeat'."""
    text = urlopen(metrics_url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in SERVER_COUNTERS:
                key = f"{name} {sample.labels.get('operation', '?')}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


def server_requests_used(before: dict[str, float], after: dict[str, float], top: int = 15) -> dict[str, int]:
    """The `top` (counter, operation) pairs by how many more there were between two `server_requests` readings."""
    used = {key: after[key] - before.get(key, 0.0) for key in after}
    return {key: round(n) for key, n in sorted(used.items(), key=lambda kv: -kv[1])[:top] if n > 0}


CPUACCT = ("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage",  # cgroup v1 (these machines)
           "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat")  # cgroup v2 with systemd


def containers_cpu_s(ids: list[str]) -> dict[str, float]:
    """CPU seconds each container has used since it (last) started, from its cgroup; a container with no readable
    cgroup (stopped, or another layout) is left out."""
    out = {}
    for cid in ids:
        for pattern in CPUACCT:
            try:
                text = Path(pattern.format(id=cid)).read_text()
            except OSError:
                continue
            out[cid] = int(text.split()[1]) / 1e6 if text.startswith("usage_usec") else int(text) / 1e9
            break
    return out


def containers_cpu_used(before: dict[str, float], after: dict[str, float]) -> float | None:
    """CPU seconds the containers used between two `containers_cpu_s` readings; None if none was readable. A
    container restarted in between counts from zero again (its new cgroup's whole count), and one stopped at the
    end counts nothing: a killed member is undercounted, never negative."""
    if not after:
        return None
    return sum(used - before.get(cid, 0.0) if used >= before.get(cid, 0.0) else used for cid, used in after.items())
