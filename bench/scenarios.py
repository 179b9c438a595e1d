"""The measurements. Each takes the benchmark's `Lab` (server, queue, subject copies) and returns plain data.

- ttd_ttr:   N chaos runs on one copy, alternating leader and follower targets.
- overhead:  the same run as a workflow and as a plain asyncio script, back to back.
- parallel:  K copies chaos-tested at once by one fresh worker process (one step of the sweep); its CPU
             (the event loop's thread apart) and memory.
- subject_figures: per subject (etcd, nats, postgres, a folder): image build, cluster up until healthy.
- fault_matrix: per subject x fault kind, N runs alternating the primary role's holder and a follower: TTD/TTR.
"""

from __future__ import annotations

import asyncio
from collections import Counter
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities.images import ensure_images, image_exists
from bench.measure import (
    STAGES,
    History,
    containers_cpu_s,
    containers_cpu_used,
    cpu_by_command,
    cpu_used_by_command,
    decode,
    machine_busy,
    read_history,
    server_requests,
    server_requests_used,
    sample_process,
    summary,
    thread_cpu_s,
    thread_wait_s,
)
from bench.plain import run_plain
from bench.task_anatomy import TaskAnatomy
from durable_chaos.contracts import (
    DEFAULT_LOAD_RATE,
    ChaosInput,
    ChaosReport,
    DetectResult,
    ErrorType,
    FaultState,
    PreflightResult,
    final_report,
)
from durable_chaos.runtime.copies import SubjectCopy
from durable_chaos.hosts import default_host
from durable_chaos.runtime.worker import serve
from workflows.chaos import ChaosDemoWorkflow

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Lab:
    client: Client
    address: str
    task_queue: str
    run_id: str  # the benchmark's id: workflow ids and compose projects carry it
    copies: list[SubjectCopy]
    logs: Path
    say: Callable[[str], None]
    detect_interval_s: float
    check_timeout_s: float
    load_concurrency: int
    workflow_task_timeout: timedelta
    parallel_load_rate: float = DEFAULT_LOAD_RATE  # the parallel sweep's load per run
    # and the length of its windows (one activity each)
    parallel_load_window_s: float = ChaosInput.model_fields["load_window_s"].default
    server_metrics_url: str | None = None  # the dev server's /metrics (its request counters)
    workers: list[subprocess.Popen] = field(default_factory=list)

    def chaos_input(self, copy: SubjectCopy, target: str | None, **more) -> ChaosInput:
        fields = dict(countdown_s=0, detect_interval_s=self.detect_interval_s, check_timeout_s=self.check_timeout_s,
                      load_concurrency=self.load_concurrency)
        return ChaosInput(subject=copy.ref, target=target, **{**fields, **more})

    async def start(self, copy: SubjectCopy, target: str | None, name: str, **more) -> WorkflowHandle:
        """Start a chaos run as the starter does (no countdown: nothing to wait for in a benchmark). `more`: other
        ChaosInput fields (the fault kind)."""
        return await self.client.start_workflow(
            ChaosDemoWorkflow.run, self.chaos_input(copy, target, **more), id=f"{self.run_id}-{name}",
            task_queue=self.task_queue, task_timeout=self.workflow_task_timeout)

    def start_worker(self, name: str, command: tuple[str, ...] = ("worker.py",), **more_env: str) -> subprocess.Popen:
        """`python worker.py` as a user runs it (or another `command`), on the benchmark's server and queue."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.update(TEMPORAL_ADDRESS=self.address, CHAOS_TASK_QUEUE=self.task_queue, PYTHONUNBUFFERED="1", **more_env)
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.workers.append(proc)
        return proc

    async def wait_polling(self, proc: subprocess.Popen, name: str, timeout_s: float = 60) -> None:
        log = self.logs / f"{name}.log"
        deadline = time.monotonic() + timeout_s
        while "worker polling" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start: {log.read_text(errors='replace')[-500:]}")
            await asyncio.sleep(0.05)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()


async def _leader_and_follower(copy: SubjectCopy) -> tuple[str, str]:
    check = await copy.wait_healthy()
    leader = check.roles.get(copy.instance.subject.primary_role)
    if not check.ok or leader is None:
        raise RuntimeError(f"{copy.instance.project} is not healthy: {check.violations}")
    follower = next(s for s in copy.instance.subject.targets if s != leader)
    return leader, follower


async def _chaos_run(lab: Lab, copy: SubjectCopy, target: str | None, name: str,
                     **more) -> tuple[ChaosReport, History]:
    handle = await lab.start(copy, target, name, **more)
    report = await final_report(handle)
    return report, await read_history(handle)


async def _run_record(lab: Lab, report: ChaosReport, history: History, role: str = "leader") -> dict:
    """One run's figures. The leader before the kill is the preflight baseline's, recorded in the history."""
    pre = history.first("preflight")
    leader_before = ((await decode(lab.client, pre, PreflightResult)).baseline.roles.get(role)
                     if pre and pre.result else None)
    detect = history.first("detect_violation")
    restore = history.first("restore_fault")
    rec = {
        "workflow_id": report.workflow_id, "target": report.target, "leader_before": leader_before,
        "killed_leader": report.target == leader_before, "verdict": report.verdict,
        "ttd_s": report.time_to_detect_s, "ttr_s": report.time_to_restore_s,
    }
    # Where TTD goes: getting the detect activity running after the kill, then polling until a check fails.
    if detect and detect.result:
        rec["detect_checks"] = (await decode(lab.client, detect, DetectResult)).checks
    if detect and detect.started and report.injected_at and report.detected_at:
        rec["ttd_dispatch_s"] = round((detect.started - report.injected_at).total_seconds(), 3)
        rec["ttd_polling_s"] = round((report.detected_at - detect.started).total_seconds(), 3)
    # Where TTR goes: `docker start` (the restore activity), then the member rejoining until every check passes.
    if restore and restore.started and restore.closed and report.restored_at:
        rec["ttr_docker_start_s"] = round((restore.closed - restore.started).total_seconds(), 3)
        rec["ttr_rejoin_s"] = round((report.restored_at - restore.closed).total_seconds(), 3)
    return rec


async def ttd_ttr(lab: Lab, runs: int) -> dict:
    copy = lab.copies[0]
    records = []
    async with serve(lab.client, default_host(), lab.task_queue):
        for i in range(runs):
            leader, follower = await _leader_and_follower(copy)
            # Alternate so both halves of the split get runs; the leader is re-read before each run.
            target = leader if i % 2 == 0 else follower
            report, history = await _chaos_run(lab, copy, target, f"ttd-{i}")
            rec = await _run_record(lab, report, history)
            records.append(rec)
            lab.say(f"  run {i + 1}/{runs}: kill {rec['target']} ({'leader' if rec['killed_leader'] else 'follower'})"
                    f" TTD {rec['ttd_s']}s TTR {rec['ttr_s']}s {rec['verdict']}")

    def split(key: str) -> dict:
        return {
            "all": summary([r[key] for r in records if r[key] is not None]),
            "leader": summary([r[key] for r in records if r[key] is not None and r["killed_leader"]]),
            "follower": summary([r[key] for r in records if r[key] is not None and not r["killed_leader"]]),
        }

    parts = ("ttd_dispatch_s", "ttd_polling_s", "detect_checks", "ttr_docker_start_s", "ttr_rejoin_s")
    return {
        "ttd_s": split("ttd_s"), "ttr_s": split("ttr_s"),
        "parts": {k: summary([r[k] for r in records if k in r]) for k in parts},
        "all_passed": all(r["verdict"] == "pass" for r in records), "runs": records,
    }


# A fault nobody notices (a rate cap on a quiet member) costs the whole detect timeout: keep it short.
FAULT_DETECT_TIMEOUT_S = 10.0
# A copy still unhealthy after this long before a run gets no run (the run's preflight would wait it out anyway).
HEALTHY_BEFORE_RUN_S = 120.0
# After this many runs in a row that found the copy unhealthy, the cell stops (the copy is then recreated).
UNHEALTHY_IN_A_ROW = 2


def failure_mark(report: ChaosReport) -> str | None:
    """Why a run failed, in a few words for the table (the report's `reasons` in the JSON hold the whole story)."""
    if report.verdict == "pass":
        return None
    why = []
    if report.injected_at is None:
        why.append("not injected")
    elif report.detected_at is None:
        why.append("not detected")
    if report.fault_state != FaultState.RESTORED:
        why.append("not restored")
    elif report.final_check is None or not report.final_check.ok:
        why.append("not healthy after restore")
    if report.stopped is not None:
        why.append("stopped by a guardrail")
    if report.safety is not None and report.safety.verdict == "violated":
        why.append("data safety violated")
    if not why:  # a failed stage, a monitoring detector that missed: the first reason that is not good news
        why.append(next((r for r in report.reasons if r.startswith(("stage ", "internal error", "your monitoring"))),
                        report.reasons[0] if report.reasons else "fail")[:60])
    return ", ".join(why)


async def _fault_run(lab: Lab, copy: SubjectCopy, kind: str, i: int) -> dict:
    """One run of a cell. Targets alternate by role (resolved in the run's preflight, so it is the holder at that
    moment); a subject without roles gets random targets. Never raises: a run that could not finish is a record
    with `error`."""
    subject = copy.instance.subject
    role = subject.primary_role
    target = ("leader" if i % 2 == 0 else "follower") if role else "random"
    name = f"fault-{subject.name}-{kind}-{i}"
    check = await copy.wait_healthy(timeout=HEALTHY_BEFORE_RUN_S)
    if not check.ok:
        return {"target": target, "verdict": "error", "ttd_s": None, "ttr_s": None, "injected": False,
                "detected": False, "diagnosis_correct": False, "unhealthy_before": True,
                "failure": "not run: copy unhealthy before it",
                "error": f"copy not healthy before the run after {HEALTHY_BEFORE_RUN_S:g}s: "
                         f"{'; '.join(check.violations)}"}
    try:
        report, history = await _chaos_run(lab, copy, target, name, fault=kind,
                                           detect_timeout_s=FAULT_DETECT_TIMEOUT_S)
    except Exception as err:  # the workflow failed (or never started): no report, say why
        cause = getattr(err, "cause", None)
        refused = _refusal(err)
        if refused is not None:  # preflight said no (clock-skew on a Go program): an answer, not an error
            return {"target": target, "verdict": "refused", "ttd_s": None, "ttr_s": None, "injected": False,
                    "detected": False, "diagnosis_correct": False, "failure": f"refused: {refused}"}
        return {"target": target, "verdict": "error", "ttd_s": None, "ttr_s": None, "injected": None,
                "detected": False, "diagnosis_correct": False, "workflow_id": f"{lab.run_id}-{name}",
                "failure": f"no report: {type(err).__name__}",
                "error": f"{type(err).__name__}: {err}" + (f" ({cause})" if cause else "")}
    rec = await _run_record(lab, report, history, role or "leader")
    rec.update(injected=report.injected_at is not None, detected=report.detected_at is not None,
               diagnosis_correct=bool(report.diagnosis and report.diagnosis.correct),
               restored_healthy=report.time_to_restore_s is not None,
               run_s=round((report.finished_at - report.started_at).total_seconds(), 3),
               reasons=report.reasons, failure=failure_mark(report))
    return rec


def _refusal(err: BaseException) -> str | None:
    """The one line a run was refused with in preflight (bad input: nothing was touched), if that is why it failed."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == ErrorType.BAD_INPUT:
            return cause.message
        cause = getattr(cause, "cause", None) or cause.__cause__
    return None


def _cell(subject: str, kind: str, records: list[dict], skipped: str | None = None) -> dict:
    verdicts: dict[str, int] = {}
    for r in records:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    failures: dict[str, int] = {}  # short reason -> how many runs
    for r in records:
        if r["verdict"] != "pass":
            why = r.get("failure") or "fail"
            failures[why] = failures.get(why, 0) + 1
    return {
        "subject": subject, "fault": kind, "runs": len(records),
        # Runs whose fault was in place (a run that failed without a report may or may not have injected it).
        "injected": sum(bool(r.get("injected")) for r in records),
        "detected": sum(r["detected"] for r in records),
        "diagnosis_correct": sum(r["diagnosis_correct"] for r in records),
        "restored_healthy": sum(r["ttr_s"] is not None for r in records),
        "verdicts": verdicts, "failures": failures, "skipped": skipped,
        "ttd_s": summary([r["ttd_s"] for r in records if r["ttd_s"] is not None]),
        "ttr_s": summary([r["ttr_s"] for r in records if r["ttr_s"] is not None]),
        "records": records,
    }


def skipped_cell(subject: str, kind: str, why: str) -> dict:
    return _cell(subject, kind, [], skipped=why)


async def _recreate_if_broken(lab: Lab, copy: SubjectCopy) -> str | None:
    """After a cell whose last run left the copy unhealthy: a fresh copy if it stays so, so one broken cell does not
    leave the subject's other fault kinds unmeasured. Returns what was done, for the cell's record."""
    done = await copy.recreate_if_broken()
    if done is not None:
        lab.say(f"  {copy.instance.subject.name}: {done}")
    return done


async def subject_cells(lab: Lab, copy: SubjectCopy, kinds: list[str], runs: int) -> list[dict]:
    """One subject's row of the matrix: `runs` runs per fault kind, one after another, on its own copy. A copy a
    fault left broken is recreated before the next kind (and the cell says so)."""
    subject = copy.instance.subject
    rows: list[dict] = []
    for kind in kinds:
        records: list[dict] = []
        unhealthy = 0
        for i in range(runs):
            rec = await _fault_run(lab, copy, kind, i)
            records.append(rec)
            unhealthy = unhealthy + 1 if rec.get("unhealthy_before") else 0
            who = ("leader" if rec["killed_leader"] else "follower") if "killed_leader" in rec else "no report"
            lab.say(f"  {subject.name} {kind} {i + 1}/{runs}: {rec.get('target')} ({who}) TTD {rec['ttd_s']}s "
                    f"TTR {rec['ttr_s']}s {rec['verdict']}"
                    + (f" ({rec.get('failure')})" if rec["verdict"] != "pass" else ""))
            if unhealthy >= UNHEALTHY_IN_A_ROW:  # each further run would wait out the same broken copy
                break
            if rec["verdict"] == "refused":  # the next runs would be refused alike
                break
        row = _cell(subject.name, kind, records)
        if records and records[-1]["ttr_s"] is None:
            try:
                row["copy_recreated"] = await _recreate_if_broken(lab, copy)
            except Exception as err:
                row["copy_recreated"] = f"recreating the copy failed: {type(err).__name__}: {err}"
        rows.append(row)
    return rows


async def fault_matrix(lab: Lab, copies: list[SubjectCopy], kinds: list[str], runs: int,
                       concurrent: bool) -> list[dict]:
    """TTD/TTR per subject x fault kind, default parameters, one copy per subject, all served by one worker. With
    `concurrent` the subjects run side by side (each one's runs still one after another): the matrix takes about
    as long as its slowest subject, at the cost of some noise in TTR (the machine is shared)."""
    async with serve(lab.client, default_host(), lab.task_queue):
        if concurrent:
            rows = await asyncio.gather(*(subject_cells(lab, c, kinds, runs) for c in copies))
        else:
            rows = [await subject_cells(lab, c, kinds, runs) for c in copies]
    return [cell for row in rows for cell in row]


async def overhead(lab: Lab, pairs: int) -> dict:
    """Workflow vs plain script on the same copy and the same follower target, alternating, `pairs` times."""
    copy = lab.copies[0]
    wf_runs, plain_runs = [], []
    gaps: dict[str, list[float]] = {}
    task_totals: list[float] = []  # per workflow run: time spent between stages in Temporal round trips
    with TaskAnatomy() as anatomy:
        async with serve(lab.client, default_host(), lab.task_queue):
            await _overhead_pairs(lab, copy, pairs, wf_runs, plain_runs, gaps, task_totals, anatomy)
    return _overhead_figures(pairs, wf_runs, plain_runs, gaps, task_totals, anatomy)


# A stage's activity, split (ms): its span in the history, our code in it, and what Temporal added around it.
ACTIVITY_SPAN = "stage activity: started → completed (ms)"
ACTIVITY_OURS = "  our code: input, interceptors, function (ms)"
ACTIVITY_AROUND = "  Temporal: hand-over, result, completion (ms)"
ACTIVITY_COMPLETE = "    of it the completion call (ms)"


def _stage_activity_ms(report: ChaosReport, history: History, anatomy: TaskAnatomy) -> dict[str, list[float]]:
    """Each stage's activity in the history (started → completed, the server's clock) beside the worker's own
    timing of it (bench/task_anatomy.py): how much of it our code was, and what Temporal added around it."""
    out: dict[str, list[float]] = {ACTIVITY_SPAN: [], ACTIVITY_OURS: [], ACTIVITY_AROUND: [], ACTIVITY_COMPLETE: []}
    for name in STAGES:
        a = history.first(name)
        if a is None or a.started is None or a.closed is None:
            continue
        parts = anatomy.activity_parts.get((report.workflow_id, name, a.attempt), {})
        if "ours" not in parts:
            continue
        span = 1000 * (a.closed - a.started).total_seconds()
        out[ACTIVITY_SPAN].append(round(span, 3))
        out[ACTIVITY_OURS].append(round(1000 * parts["ours"], 3))
        out[ACTIVITY_AROUND].append(round(span - 1000 * parts["ours"], 3))
        if "complete" in parts:
            out[ACTIVITY_COMPLETE].append(round(1000 * parts["complete"], 3))
    return out


async def _overhead_pairs(lab: Lab, copy: SubjectCopy, pairs: int, wf_runs: list, plain_runs: list, gaps: dict,
                          task_totals: list, anatomy: TaskAnatomy) -> None:
    """The alternating runs; each list gets one entry per pair."""
    for i in range(pairs):
        _, follower = await _leader_and_follower(copy)
        report, history = await _chaos_run(lab, copy, follower, f"overhead-{i}")
        wf = history.stage_seconds()
        wf_runs.append(wf)
        run_gaps = history.orchestration_gaps()
        for key, values in run_gaps.items():
            gaps.setdefault(key, []).extend(values)
        for key, values in _stage_activity_ms(report, history, anatomy).items():
            gaps.setdefault(key, []).extend(values)
        task_totals.append(sum(run_gaps["workflow_task_s"]) + sum(run_gaps["activity_dispatch_s"]))
        _, follower = await _leader_and_follower(copy)
        plain = await run_plain(lab.chaos_input(copy, follower))
        plain_runs.append(plain)
        lab.say(f"  pair {i + 1}/{pairs}: workflow {sum(wf.values()):.3f}s ({report.verdict}), "
                f"plain {sum(plain.values()):.3f}s")


def _overhead_figures(pairs: int, wf_runs: list, plain_runs: list, gaps: dict, task_totals: list,
                      anatomy: TaskAnatomy) -> dict:
    stages = [*STAGES, "load_tail", "finish"]
    rows = []
    for stage in stages:
        w = summary([r[stage] for r in wf_runs if stage in r])["p50"]
        p = summary([r[stage] for r in plain_runs if stage in r])["p50"]
        rows.append({"stage": stage, "workflow_s": w, "plain_s": p,
                     "diff_s": None if w is None or p is None else round(w - p, 3)})

    # The load's tail is the window in flight when the last stage ends running out: 0 to 1 s by chance of phase on
    # either side, more than the whole overhead, so the ratio is of the runs without it (each side's own tail).
    def without_tail(runs: list) -> float | None:
        return summary([sum(v for k, v in r.items() if k != "load_tail") for r in runs])["p50"]

    wf_total, plain_total = without_tail(wf_runs), without_tail(plain_runs)
    # Detection and rejoin vary from run to run by up to a poll interval and an election; the stages the
    # orchestration alone adds to are the fixed-cost ones, so report their difference separately too.
    fixed = ("preflight", "inject_fault", "gather_evidence", "diagnose", "restore_fault")
    fixed_diff = sum(r["diff_s"] for r in rows if r["stage"] in fixed and r["diff_s"] is not None)
    between = summary(task_totals)["p50"]
    return {
        "pairs": pairs, "stages": rows, "workflow_total_s": wf_total, "plain_total_s": plain_total,
        "overhead_ratio": round(wf_total / plain_total - 1, 4) if plain_total else None,
        "with_load_tail": {"workflow_total_s": summary([sum(r.values()) for r in wf_runs])["p50"],
                           "plain_total_s": summary([sum(r.values()) for r in plain_runs])["p50"]},
        "fixed_stages_diff_s": round(fixed_diff, 3),
        "per_stage": {key: summary(values) for key, values in gaps.items()},
        # The same cost read directly from the history, free of the two variants' run-to-run noise.
        "between_stages_s": between,
        "between_stages_ratio": round(between / wf_total, 4) if wf_total else None,
        # The worker's side of each workflow task, timed in the worker (bench/task_anatomy.py), in ms.
        "task_anatomy_ms": anatomy.figures(),
        "workflow_runs": wf_runs, "plain_runs": plain_runs,
    }


class _CpuSampler:
    """Samples a process once a second: its CPU (every thread), its main thread's (the one the asyncio event loop
    runs on) and the time that thread spent runnable but not running, and the whole machine's CPU. A main thread
    near 100% of a core is a saturated event loop; a long run-queue wait is a loop starved by the machine."""

    def __init__(self, pid: int, every_s: float = 1.0):
        self.pid, self.every_s = pid, every_s
        self.series: dict[str, list[float]] = {"process": [], "loop": [], "loop_wait": [], "machine": []}
        self._task: asyncio.Task | None = None

    def _read(self) -> tuple[float, ...]:
        busy, total = machine_busy()
        return (time.monotonic(), sample_process(self.pid).cpu_s, thread_cpu_s(self.pid, self.pid),
                thread_wait_s(self.pid, self.pid), busy, total)

    async def _run(self) -> None:
        prev = self._read()
        while True:
            await asyncio.sleep(self.every_s)
            try:
                now = self._read()
            except (FileNotFoundError, ProcessLookupError):
                return
            dt = now[0] - prev[0]
            for key, i in (("process", 1), ("loop", 2), ("loop_wait", 3)):
                self.series[key].append(round(100 * (now[i] - prev[i]) / dt, 1))
            cpus = os.cpu_count() or 1
            self.series["machine"].append(round(100 * cpus * (now[4] - prev[4]) / max(now[5] - prev[5], 1), 1))
            prev = now

    def __enter__(self) -> "_CpuSampler":
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()

    def figures(self) -> dict:
        return {"worker_cpu_pct_1s": summary(self.series["process"]),
                "event_loop_thread_pct_1s": summary(self.series["loop"]),
                # seconds in which the event loop's thread was on a core ≥ 90% of the time: saturation
                "event_loop_saturated_s": sum(p >= 90 for p in self.series["loop"]),
                "event_loop_runqueue_wait_pct_1s": summary(self.series["loop_wait"]),
                "machine_cpu_pct_1s": summary(self.series["machine"]),  # 100% = one core, whoever uses it
                "series_1s": self.series}


def _container_ids(copies: list[SubjectCopy]) -> list[str]:
    projects = {c.instance.project for c in copies}
    out = subprocess.run(["docker", "ps", "--no-trunc", "--filter=label=com.docker.compose.project",
                          "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
                         capture_output=True, text=True)
    return [cid for cid, _, project in (line.partition(" ") for line in out.stdout.splitlines()) if project in projects]


async def _healthy_copies(copies: list[SubjectCopy], timeout: float) -> dict[str, list[str]]:
    """Each copy's violations (only the unhealthy ones) after waiting up to `timeout` for them to go away."""
    checks = await asyncio.gather(*(c.wait_healthy(timeout=timeout) for c in copies))
    return {c.instance.project: r.violations for c, r in zip(copies, checks) if not r.ok}


async def parallel(lab: Lab, k: int, step: int) -> dict:
    """K copies, one fresh worker process (so its CPU and peak RSS are this step's), K runs at once with random
    targets at the product's default load rate."""
    copies = lab.copies[:k]
    # Every run restores its fault and waits until healthy, so the copies should be healthy now. One that is not
    # was left broken by an earlier step: say so, bring it back up (compose up) and go on.
    repaired = await _healthy_copies(copies, timeout=30)
    if repaired:
        lab.say(f"  [red]left unhealthy by an earlier step[/]: {repaired}; bringing them up again")
        await asyncio.gather(*(asyncio.to_thread(c.up) for c in copies if c.instance.project in repaired))
        if still := await _healthy_copies(copies, timeout=120):
            raise RuntimeError(f"subject copies not healthy before the {k}-copy step: {still}")
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    name = f"parallel-{step}-k{k}-worker"
    proc = lab.start_worker(name)
    await lab.wait_polling(proc, name)
    containers = _container_ids(copies)
    subjects_before = containers_cpu_s(containers)
    machine_before = cpu_by_command()
    server_before = server_requests(lab.server_metrics_url) if lab.server_metrics_url else {}
    before = sample_process(proc.pid)
    t0 = time.monotonic()
    with _CpuSampler(proc.pid) as sampler:
        handles = [await lab.start(c, None, f"parallel-{step}-k{k}-{i}", load_rate=lab.parallel_load_rate,
                                   load_window_s=lab.parallel_load_window_s)
                   for i, c in enumerate(copies)]
        results = await asyncio.gather(*(final_report(h) for h in handles), return_exceptions=True)
        wall = time.monotonic() - t0
        after = sample_process(proc.pid)
    subjects_after = containers_cpu_s(containers)
    machine_used = cpu_used_by_command(machine_before, cpu_by_command())
    server_after = server_requests(lab.server_metrics_url) if server_before else {}
    server_used = server_requests_used(server_before, server_after)
    server_rpcs = sum(n - server_before.get(key, 0.0) for key, n in server_after.items()
                      if key.startswith("service_requests"))
    lab.stop_workers()
    reports = [r for r in results if isinstance(r, ChaosReport)]
    records = []
    for h, r in zip(handles, results):
        if isinstance(r, ChaosReport):
            history = await read_history(h)
            rec = await _run_record(lab, r, history)
            rec["reasons"] = r.reasons
            rec["load_baseline_ops_s"] = r.load.baseline_ops_s
            rec["load_errors"] = r.load.errors
            rec["load_ops_answered"] = sum(w.ops for w in r.load.windows)
            rec["load_windows"] = len(r.load.windows)
            rec["timed_out_activities"] = [a.name for a in history.activities if a.outcome == "timed out"]
            rec["failed_activities"] = [a.name for a in history.activities if a.outcome == "failed"]
            rec["activity_failures"] = [f"{a.name} {f}" for a in history.activities for f in a.failures]
            rec["workflow_task_timeouts"] = history.workflow_task_timeouts
            rec["workflow_task_timeout_kinds"] = history.workflow_task_timeout_kinds
            records.append(rec)
    failures = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, ChaosReport)]
    failures += [f"{r.workflow_id}: {'; '.join(r.reasons)}" for r in reports if r.verdict != "pass"]
    # Law 1 at scale: once every run has ended, every copy must be whole again (a run's own last check said so).
    broken_after = await _healthy_copies(copies, timeout=5)
    if broken_after:
        lab.say(f"  [red]unhealthy after their runs ended[/]: {broken_after}")
    cpu = after.cpu_s - before.cpu_s
    windows = sum(len(r.load.windows) for r in reports)
    children = after.children_cpu_s - before.children_cpu_s
    failure_kinds: dict[str, int] = {}
    for rec in records:
        for f in rec["activity_failures"]:
            kind = f.split(": ", 1)[-1].split(" <- ")[0][:80]
            key = f"{f.split(' ', 1)[0]}: {kind}"
            failure_kinds[key] = failure_kinds.get(key, 0) + 1
    return {
        "subjects": k, "loadavg_before": loadavg, "repaired_before": repaired, "unhealthy_after": broken_after,
        "activity_failure_kinds": dict(sorted(failure_kinds.items(), key=lambda kv: -kv[1])),
        "load_rate": lab.parallel_load_rate, "load_window_s": lab.parallel_load_window_s, "wall_s": round(wall, 3),
        "passed": sum(r.verdict == "pass" for r in reports),
        "worker_cpu_s": round(cpu, 2), "worker_cpu_pct": round(100 * cpu / wall, 1),
        "worker_cpu_s_per_run": round(cpu / k, 3),
        # The load is most of a run's work, and a starved worker sends less of it (not sent: over the concurrency
        # cap): CPU per run alone would flatter a step that did less.
        "load_ops_answered": (answered := sum(r["load_ops_answered"] for r in records)),
        # What the windows offered (sent or capped): a window's length times the rate overstates it when the window
        # ran long (its answers or its history part were late), and the next one started late.
        "load_ops_offered": sum(w.ops + w.errors for r in reports for w in r.load.windows),
        "load_windows": windows,
        "worker_cpu_ms_per_answered_op": round(1000 * cpu / answered, 3) if answered else None,
        "docker_cli_cpu_s": round(children, 2),
        # What the K etcd clusters themselves burnt meanwhile (serving the load, elections): the other big user of
        # the same 2 cores. The killed members restart from zero, so this is a lower bound.
        "subjects_cpu_s": (None if (used := containers_cpu_used(subjects_before, subjects_after)) is None
                           else round(used, 2)),
        # Who else used the 2 cores meanwhile: the Temporal dev server, dockerd, containerd's shims, the subjects.
        "cpu_s_by_command": machine_used,
        # What the server's CPU went on: its RPCs and database calls by operation, and all of them per load window.
        "server_requests_by_operation": server_used,
        "server_rpcs": round(server_rpcs),
        "server_rpcs_per_load_window": round(server_rpcs / windows, 1) if windows else None,
        "worker_rss_mb": after.rss_mb, "worker_peak_rss_mb": after.peak_rss_mb,
        **sampler.figures(),
        "all_passed": not failures and len(reports) == k, "failures": failures,
        "ttd_s": summary([r.time_to_detect_s for r in reports if r.time_to_detect_s is not None]),
        "ttr_s": summary([r.time_to_restore_s for r in reports if r.time_to_restore_s is not None]),
        "load_baseline_ops_s": summary([r.load.baseline_ops_s for r in reports if r.load.baseline_ops_s is not None]),
        # Runs whose load answered less than half its rate before the fault (their reasons say so): a pass of such
        # a run says little about clients.
        "load_hardly_ran": sum(r.load.hardly_ran for r in reports),
        "activity_timeouts": sum(len(r["timed_out_activities"]) for r in records),
        "workflow_task_timeouts": sum(r["workflow_task_timeouts"] for r in records),
        "workflow_task_timeout_kinds": dict(sum((Counter(r["workflow_task_timeout_kinds"]) for r in records),
                                                Counter())),
        "runs": records,
    }


def _image_mb(ref: str) -> float | None:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True)
    return round(int(out.stdout) / 1e6, 1) if out.returncode == 0 else None


async def subject_figures(lab: Lab, copy: SubjectCopy, rebuild: bool) -> dict:
    """One subject: its images (built from scratch when `rebuild`) and a copy brought up until healthy, which the
    fault matrix then uses (its kill column is this subject's TTD/TTR for a kill). Never raises: a copy that does
    not get healthy is a row with `error`. The copy is torn down by the caller."""
    subject = copy.instance.subject
    images = subject.images()
    build_s = None
    row = {"subject": subject.name, "images": {}, "build_s": None, "up_s": None, "error": None}
    try:
        if rebuild:
            subprocess.run(["docker", "image", "rm", "-f", *(i.ref for i in images if i.recipe is not None)],
                           capture_output=True)
            subprocess.run("docker image ls -q chaos-debian-rootfs | xargs -r docker image rm -f", shell=True,
                           capture_output=True)
            began = time.monotonic()
            await asyncio.to_thread(ensure_images, images)
            build_s = round(time.monotonic() - began, 1)
        elif not all(image_exists(i.ref) for i in images):
            await asyncio.to_thread(ensure_images, images)
        row.update(build_s=build_s, images={i.ref: _image_mb(i.ref) for i in images})
        began = time.monotonic()
        await asyncio.to_thread(copy.up)
        healthy = await copy.wait_healthy(timeout=180)
        row["up_s"] = round(time.monotonic() - began, 2)
        if not healthy.ok:
            row["error"] = f"never became healthy in 180 s: {'; '.join(healthy.violations)}"
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"
    lab.say(f"  {subject.name}: images {'built in ' + str(build_s) + 's' if build_s else 'present'}, "
            + (f"FAILED: {row['error']}" if row["error"] else f"up and healthy in {row['up_s']}s"))
    return row
