"""Chaos runs on a busy host: stress-ng loads every CPU and the disk alongside, as image builds and other Docker work
do on a user's machine. What a busy host must not cause is read from the runs' event histories: activities that
timed out (a heartbeat that never reached the server), activities retried, and load windows lost. The worker's own
log adds the event-loop stalls its watchdog saw (runtime/loop_watch.py), which name what held the loop.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile

from bench.measure import History, summary
from bench.scenarios import Lab, _chaos_run, _leader_and_follower
from bench.tools import ensure_tool

STALL_LINE = "event loop stalled for "


def stressors(cpus: int) -> list[str]:
    """A CPU hog per core, a disk writer and a sync() caller (the shape of an image build next door)."""
    return ["--cpu", str(cpus), "--hdd", "1", "--hdd-bytes", "256M", "--io", "1"]


def trouble(h: History) -> dict:
    """What went wrong in one run that a healthy, idle host would not show."""
    windows = [a for a in h.activities if a.name == "run_load_window"]
    return {
        "timeouts": [f"{a.name}: {a.timeout_type}" for a in h.activities if a.timeout_type]
        + [f"{a.name}: {a.retried_after} (then retried)" for a in h.activities
           if a.retried_after in ("HEARTBEAT", "START_TO_CLOSE", "SCHEDULE_TO_START")],
        "retried": [f"{a.name} attempt {a.attempt}: after {a.retried_after}" for a in h.activities if a.attempt > 1],
        "lost_windows": sum(a.outcome not in ("completed", "pending") for a in windows),
        "windows": len(windows),
        "workflow_task_timeouts": h.workflow_task_timeouts,
        "longest_workflow_task_s": round(max(h.workflow_task_s, default=0), 3),
    }


async def stress(lab: Lab, runs: int, cpus: int) -> dict:
    """`runs` chaos runs one after another on the first copy, served by a `python worker.py` of their own, while
    stress-ng runs."""
    stress_ng = ensure_tool("stress-ng")
    copy = lab.copies[0]
    worker = lab.start_worker("stress-worker")
    await lab.wait_polling(worker, "stress-worker")
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-stress-") as scratch:
        hog = subprocess.Popen([stress_ng, *stressors(cpus), "--temp-path", scratch, "--timeout", "0", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for i in range(runs):
                leader, follower = await _leader_and_follower(copy)
                target = leader if i % 2 == 0 else follower
                report, history = await _chaos_run(lab, copy, target, f"stress-{i}")
                rec = {"target": report.target, "verdict": report.verdict, "ttd_s": report.time_to_detect_s,
                       "ttr_s": report.time_to_restore_s, "reasons": report.reasons, **trouble(history)}
                records.append(rec)
                lab.say(f"  stress run {i + 1}/{runs}: {rec['verdict']} TTD {rec['ttd_s']}s TTR {rec['ttr_s']}s; "
                        f"timeouts {len(rec['timeouts'])}, retried {len(rec['retried'])}, lost windows "
                        f"{rec['lost_windows']}/{rec['windows']}")
        finally:
            hog.send_signal(signal.SIGINT)  # stress-ng stops its workers and removes its files
            try:
                hog.wait(timeout=15)
            except subprocess.TimeoutExpired:
                hog.kill()
                hog.wait()
    lab.stop_workers()
    log = (lab.logs / "stress-worker.log").read_text(errors="replace")
    stalls = [float(line.split(STALL_LINE, 1)[1].split()[0]) for line in log.splitlines()
              if STALL_LINE in line and "so far" not in line]
    return {
        "runs": runs, "stressors": " ".join(stressors(cpus)),
        "passed": sum(r["verdict"] == "pass" for r in records),
        "timeouts": sum(len(r["timeouts"]) for r in records),
        "retried": sum(len(r["retried"]) for r in records),
        "lost_windows": sum(r["lost_windows"] for r in records),
        "windows": sum(r["windows"] for r in records),
        "workflow_task_timeouts": sum(r["workflow_task_timeouts"] for r in records),
        "longest_workflow_task_s": max((r["longest_workflow_task_s"] for r in records), default=None),
        "loop_stalls": len(stalls), "longest_stall_s": max(stalls, default=None),
        "ttd_s": summary([r["ttd_s"] for r in records if r["ttd_s"] is not None]),
        "ttr_s": summary([r["ttr_s"] for r in records if r["ttr_s"] is not None]),
        "records": records,
    }
