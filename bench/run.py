"""Benchmark durable-chaos against the real etcd subject: time-to-detect, time-to-restore, orchestration overhead,
resume after a worker dies, many subjects in parallel, and the data safety checker's speed.

    python -m bench.run --help

It starts its own Temporal dev server on a free port and its own etcd copies (compose projects `bench-<id>-<k>`
on 127.0.0.1 ports 27000-28990), never touches anything else, and removes all of it at the end. Prints a table
and writes the figures to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench import loadgen, powerfs, resume, safety, scenarios, startup, stress
from bench.measure import machine_busy
from durable_chaos.contracts import (DEFAULT_LOAD_RATE, MAX_LOAD_RATE, WORKFLOW_TASK_TIMEOUT, Attr, ChaosInput,
                                     SubjectRef)
from durable_chaos.faults import CATALOG
from durable_chaos.hosts import default_host
from durable_chaos.runtime.copies import SubjectCopy, free_port_base
from durable_chaos.runtime.devserver import SERVER_SETTINGS, temporal_binary
from durable_chaos.runtime.priority import raise_threads, realtime_threads, realtime_wanted
from durable_chaos.runtime.worker import STICKY_TIMEOUT
from subjects import get_subject, subject_ref

RESULTS = Path(__file__).resolve().parent / "results"
PORTS = (27000, 28990)
console = Console(stderr=True)
# The product's defaults, so a plain `python -m bench.run` measures what users get.
DEFAULTS = {name: ChaosInput.model_fields[name].default
            for name in ("detect_interval_s", "check_timeout_s", "load_concurrency", "load_window_s")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="chaos runs for TTD/TTR (alternating leader/follower)")
    p.add_argument("--detect-interval", type=float, default=DEFAULTS["detect_interval_s"],
                   help="seconds between detection checks")
    p.add_argument("--check-timeout", type=float, default=DEFAULTS["check_timeout_s"],
                   help="seconds each probe request may take")
    p.add_argument("--load-concurrency", type=int, default=DEFAULTS["load_concurrency"],
                   help="load operations in flight at most per run: the load is open loop at the load rate, and "
                        "an operation due while this many are unanswered is not sent (recorded as capped); also the "
                        "closed-loop clients of the load generator's throughput figure, and wrk's connections")
    p.add_argument("--workflow-task-timeout", type=float, default=WORKFLOW_TASK_TIMEOUT.total_seconds(),
                   metavar="SECONDS", help="workflow task timeout of the runs (the starter's value by default)")
    p.add_argument("--overhead-pairs", type=int, default=5, help="workflow/plain-script pairs for the overhead")
    p.add_argument("--parallel", type=_counts, default="1,10,20", metavar="K,K",
                   help="the sweep: etcd copies chaos-tested at once, one step each with a fresh worker process")
    p.add_argument("--parallel-load-rate", type=float, default=DEFAULT_LOAD_RATE, metavar="OPS_S",
                   help="load per run in the parallel sweep (anything but the product's default is labelled)")
    p.add_argument("--parallel-load-window", type=float, default=DEFAULTS["load_window_s"], metavar="SECONDS",
                   help="length of each load window (one activity each) in the parallel sweep")
    p.add_argument("--skip-ttd", action="store_true", help="skip the TTD/TTR runs")
    p.add_argument("--skip-overhead", action="store_true", help="skip the orchestration overhead comparison")
    p.add_argument("--skip-resume", action="store_true", help="skip the worker SIGKILL/resume runs")
    p.add_argument("--resume-points", default=",".join(resume.POINTS), metavar="A,B",
                   help="where in a run the worker is SIGKILLed, one run each")
    p.add_argument("--skip-parallel", action="store_true", help="skip the parallel-subjects run")
    p.add_argument("--subjects", default="etcd,nats,postgres", metavar="A,B",
                   help="subjects (names or folder paths), one copy each: image, cluster up until healthy, then "
                        "their row of the fault matrix")
    p.add_argument("--rebuild-images", action="store_true",
                   help="remove each subject's local images first, to time a build from scratch")
    p.add_argument("--skip-subjects", action="store_true",
                   help="leave out the subjects table (images, cluster up); the fault matrix still brings the "
                        "copies up")
    p.add_argument("--faults", default=",".join(CATALOG), metavar="A,B",
                   help="fault kinds of the subject x fault matrix, default parameters (a kind a subject refuses, "
                        "such as clock-skew on a Go program, is one refused run in its cell)")
    p.add_argument("--fault-runs", type=int, default=5, metavar="N",
                   help="runs per subject x fault cell, alternating the primary role's holder and a follower. "
                        "p50/p95 are of these N runs, interpolated linearly: with N=5 the p95 lies 4/5 of the way "
                        "from the second-slowest run to the slowest, i.e. about the max, not a tail estimate "
                        "(use N>=20 for that)")
    p.add_argument("--fault-serial", action="store_true",
                   help="run the matrix one subject at a time (by default the subjects run side by side, each "
                        "subject's runs one after another: about a third of the wall time, a little noisier TTR)")
    p.add_argument("--skip-faults", action="store_true", help="skip the subject x fault matrix")
    p.add_argument("--stress-runs", type=int, default=20,
                   help="chaos runs on a host kept busy by stress-ng (every CPU and the disk), one after another")
    p.add_argument("--skip-stress", action="store_true", help="skip the busy-host runs")
    p.add_argument("--skip-safety", action="store_true",
                   help="skip the safety checkers' speed: a minute of history at the default load rate, and each "
                        "model on long adversarial histories")
    p.add_argument("--skip-startup", action="store_true",
                   help="skip what a run pays before it starts: `starter.py --help` beside the interpreter alone, "
                        "and replaying recorded runs as the worker runs workflow code beside Temporal's sandbox")
    p.add_argument("--skip-loadgen", action="store_true",
                   help="skip the load generator's figures (throughput beside wrk, CPU per 1,000 ops, open-loop rate)")
    p.add_argument("--skip-powerfs", action="store_true",
                   help="skip the power-loss layer's cost: one etcd member with its data on the layer beside one "
                        "without, the load generator's closed loop on each (--loadgen-seconds, --loadgen-rounds)")
    p.add_argument("--loadgen-seconds", type=float, default=5.0, metavar="SECONDS",
                   help="seconds of each throughput measurement (wrk, ours closed-loop, ours open-loop)")
    p.add_argument("--loadgen-rounds", type=int, default=3, help="rounds of the three throughput measurements")
    p.add_argument("--loadgen-rates", default="100,200,400,800", metavar="R,R",
                   help="open-loop target rates (ops/s) whose accuracy is measured")
    p.add_argument("--loadgen-windows", type=int, default=10, help="one-second load windows per target rate")
    p.add_argument("--loadgen-open-concurrency", type=int, default=64, metavar="N",
                   help="operations in flight at most when the open loop is measured at rates near wrk's")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write (default bench/results/<ts>.json)")
    args = p.parse_args(argv)
    if bad := [k for k in args.resume_points.split(",") if k and k not in resume.POINTS]:
        p.error(f"--resume-points: unknown point(s) {', '.join(bad)} (known: {', '.join(resume.POINTS)})")
    unknown = [k for k in args.faults.split(",") if k and k not in CATALOG]
    if unknown:
        p.error(f"--faults: unknown kind(s) {', '.join(unknown)} (known: {', '.join(CATALOG)})")
    try:
        args.loadgen_rates = [float(r) for r in args.loadgen_rates.split(",") if r]
    except ValueError:
        p.error("--loadgen-rates: numbers separated by commas")
    if not args.loadgen_rates or not all(0 < r <= MAX_LOAD_RATE for r in args.loadgen_rates):
        p.error(f"--loadgen-rates: each rate must be in (0, {MAX_LOAD_RATE:g}]")
    for name in ("runs", "overhead_pairs", "load_concurrency", "loadgen_open_concurrency", "fault_runs",
                 "stress_runs", "loadgen_rounds", "loadgen_windows"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("detect_interval", "check_timeout", "workflow_task_timeout", "loadgen_seconds",
                 "parallel_load_window"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 < args.parallel_load_rate <= MAX_LOAD_RATE:
        p.error(f"--parallel-load-rate must be in (0, {MAX_LOAD_RATE:g}]")
    return args


def _counts(text: str) -> list[int]:
    try:
        counts = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("every count must be at least 1")
    return counts


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _dist_table(title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("figure", "n", "min", "p50", "p95", "max", "aim", "bounded by"):
        t.add_column(col, justify="left" if col in ("figure", "aim", "bounded by") else "right")
    return t


def _dist(t: Table, label: str, s: dict, aim: str = "", bound: str = "") -> None:
    t.add_row(label, str(s["n"]), *(_fmt(s[k]) for k in ("min", "p50", "p95", "max")), aim, bound)


def _cell_texts(r: dict) -> list[str]:
    """One subject x fault cell: counts, verdicts, TTD/TTR p50 / p95; undetected runs and failures spelled out."""
    n = r["runs"]
    if r.get("skipped"):
        return [str(n), "", "", "", "", "", "", r["skipped"]]
    if r["verdicts"].get("refused") == n:  # the subject refused the kind in preflight: nothing was injected
        return [str(n), "-", "-", "-", "refused", "-", "-", next(iter(r["failures"]), "")]
    verdicts = " ".join(f"{v} {'FAIL' if k == 'fail' else 'ERROR' if k == 'error' else k}"
                        for k, v in sorted(r["verdicts"].items(), key=lambda kv: kv[0] != "pass"))
    pair = lambda s: f"{_fmt(s['p50'])} / {_fmt(s['p95'])}"  # noqa: E731
    injected = r.get("injected", n)
    missed = injected - r["detected"]  # faults in place that nobody noticed; runs that never got that far are
    ttd = pair(r["ttd_s"]) if r["detected"] else ""  # in the verdicts and why columns
    if missed:
        ttd = (ttd + "\n" if ttd else "") + f"not detected {missed}/{injected}"
    elif not ttd:
        ttd = "-"
    ttr = pair(r["ttr_s"]) if r["restored_healthy"] else "-"  # "healthy after" counts the runs that were not
    why = "; ".join(f"{k} ×{v}" for k, v in r["failures"].items())
    if r.get("copy_recreated"):
        why += ("; " if why else "") + "copy recreated after the cell"
    return [str(n), f"{r['detected']}/{n}", f"{r['diagnosis_correct']}/{n}", f"{r['restored_healthy']}/{n}", verdicts,
            ttd, ttr, why]


def render(results: dict) -> list[Table]:
    params = results["params"]
    tables = []
    if (r := results.get("ttd_ttr")) is not None:
        t = _dist_table(f"Time to detect / restore, seconds ({len(r['runs'])} runs, detect interval "
                        f"{params['detect_interval_s']}s, check timeout {params['check_timeout_s']}s, "
                        f"{'all passed' if r['all_passed'] else 'NOT ALL PASSED'})")
        _dist(t, "TTD", r["ttd_s"]["all"], "p50≤0.5 p95≤1", "kill → first failing check")
        _dist(t, "  killed the leader", r["ttd_s"]["leader"])
        _dist(t, "  killed a follower", r["ttd_s"]["follower"])
        _dist(t, "  kill → detect activity running", r["parts"]["ttd_dispatch_s"], "", "Temporal task latency")
        _dist(t, "  running → failing check done", r["parts"]["ttd_polling_s"], "", "poll phase + one check")
        _dist(t, "  checks until detected (count)", r["parts"]["detect_checks"], "", "1 = the first check saw it")
        _dist(t, "TTR", r["ttr_s"]["all"], "p50≤3", "restore start → all invariants hold")
        _dist(t, "  killed the leader", r["ttr_s"]["leader"])
        _dist(t, "  killed a follower", r["ttr_s"]["follower"])
        _dist(t, "  restore activity (docker start)", r["parts"]["ttr_docker_start_s"], "", "Docker")
        _dist(t, "  started → healthy", r["parts"]["ttr_rejoin_s"], "", "etcd boot + rejoin + poll")
        tables.append(t)
    if (r := results.get("overhead")) is not None:
        t = Table(title=f"Orchestration overhead: workflow vs plain asyncio, median of {r['pairs']} pairs (s)",
                  title_justify="left")
        for col in ("stage", "workflow", "plain", "difference"):
            t.add_column(col, justify="left" if col == "stage" else "right")
        for row in r["stages"]:
            t.add_row(row["stage"], _fmt(row["workflow_s"]), _fmt(row["plain_s"]), _fmt(row["diff_s"]))
        t.add_section()
        t.add_row("total without the load's tail", _fmt(r["workflow_total_s"]), _fmt(r["plain_total_s"]),
                  f"{100 * r['overhead_ratio']:+.1f}% (aim ≤2%)")
        tail = r["with_load_tail"]
        t.add_row("  with it (0-1 s by phase)", _fmt(tail["workflow_total_s"]), _fmt(tail["plain_total_s"]), "")
        t.add_row("time between stages (history)", _fmt(r["between_stages_s"]), "",
                  f"{100 * r['between_stages_ratio']:.1f}% of the workflow's total")
        for key, s in r["per_stage"].items():
            t.add_row(f"  per stage: {key.removesuffix('_s').replace('_', ' ')} p50/p95", "", "",
                      f"{_fmt(s['p50'])} / {_fmt(s['p95'])}")
        for part, s in r.get("task_anatomy_ms", {}).items():
            t.add_row(f"  in the worker, per activation: {part} p50/p95 (ms)", "", "",
                      f"{_fmt(s['p50'])} / {_fmt(s['p95'])}" if s["n"] else "not measured")
        tables.append(t)
    if (r := results.get("resume")) is not None:
        t = Table(title="Resume after a worker SIGKILL, two workers serving (s; aim ≤ 2 at every point)",
                  title_justify="left")
        for col in ("killed during", "→ next activity running on another worker", "s", "after", "run", "SIGKILL → done",
                    "new worker polling"):
            t.add_column(col, justify="right" if col in ("s", "SIGKILL → done", "new worker polling") else "left")
        for k in r["points"]:
            t.add_row(k["point"], f"{k['next_activity']} (attempt {k['next_attempt']})",
                      _fmt(k["kill_to_next_activity_s"]), k["retried_after"] or "", k["verdict"],
                      _fmt(k["kill_to_completion_s"]), _fmt(k["replacement_worker_polling_s"]))
        s = r["kill_to_next_activity_s"]
        t.add_section()
        t.add_row("all points", "p50 / max", f"{_fmt(s['p50'])} / {_fmt(s['max'])}", "",
                  "all pass" if r["all_passed"] else "NOT ALL PASSED", "", "")
        tables.append(t)
    if steps := results.get("parallel"):
        tables.append(_parallel_table(steps, params["parallel_load_rate"],
                                      params.get("parallel_load_window_s", DEFAULTS["load_window_s"])))
    if (r := results.get("startup")) is not None:
        t = Table(title="Before a run starts: CPU only, each beside its baseline")
        for col in ("figure", "ours", "baseline", "ratio"):
            t.add_column(col)
        cli, sb = r["cli"], r["sandbox"]
        h, bare = cli["starter_help"], cli["python_alone"]
        t.add_row("`starter.py --help`, whole process: wall s / CPU s / peak RSS MB (aim ≤ 0.3 s)",
                  f"{h['wall_s']} / {h['cpu_s']} / {h['peak_rss_mb']}",
                  f"python alone: {bare['wall_s']} / {bare['cpu_s']} / {bare['peak_rss_mb']}", "")
        t.add_row(f"replaying a recorded run ({sb['histories']} runs × {sb['rounds']}): CPU ms per run",
                  str(sb["cpu_ms_per_replay"]), f"in the sandbox: {sb['cpu_ms_per_replay_in_sandbox']}",
                  _fmt(sb["ratio"]))
        tables.append(t)
    if (r := results.get("stress")) is not None:
        t = Table(title=f"Busy host: {r['runs']} runs beside stress-ng {r['stressors']}, {r['passed']} passed",
                  title_justify="left")
        for col in ("figure", "value", "aim"):
            t.add_column(col, justify="right" if col == "value" else "left")
        t.add_row("activity timeouts (heartbeat, start-to-close)", str(r["timeouts"]), "0")
        t.add_row("activities retried", str(r["retried"]), "0")
        t.add_row("load windows lost", f"{r['lost_windows']} of {r['windows']}", "0")
        t.add_row("workflow task timeouts (longest task, s)",
                  f"{r['workflow_task_timeouts']} ({_fmt(r['longest_workflow_task_s'])})", "0")
        t.add_row("worker event-loop stalls ≥ 0.5 s (longest)",
                  f"{r['loop_stalls']} ({_fmt(r['longest_stall_s'])} s)" if r["loop_stalls"] else "0", "")
        t.add_row("TTD p50 / max (s)", f"{_fmt(r['ttd_s']['p50'])} / {_fmt(r['ttd_s']['max'])}", "")
        t.add_row("TTR p50 / max (s)", f"{_fmt(r['ttr_s']['p50'])} / {_fmt(r['ttr_s']['max'])}", "")
        tables.append(t)
    if (rows := results.get("faults")) is not None:
        kinds = ", ".join(dict.fromkeys(r["fault"] for r in rows))
        side = ("subjects side by side, each one's runs in turn" if params.get("fault_subjects_concurrent")
                else "one subject at a time")
        t = Table(title=f"Subject x fault kind ({kinds}), default parameters, {params['fault_runs']} runs per cell "
                        f"alternating the primary role's holder and a follower, {side}; detect timeout "
                        f"{params.get('fault_detect_timeout_s', scenarios.FAULT_DETECT_TIMEOUT_S):g}s; seconds",
                  title_justify="left")
        for col in ("subject", "fault", "runs", "detected", "diagnosed right", "healthy after", "verdicts",
                    "TTD p50 / p95", "TTR p50 / p95", "why runs failed"):
            wrap = col == "why runs failed"
            t.add_column(col, justify="left" if col in ("subject", "fault", "verdicts", "why runs failed") else "right",
                         no_wrap=not wrap, min_width=24 if wrap else None)
        subject = None
        for r in rows:
            if subject is not None and r["subject"] != subject:
                t.add_section()
            subject = r["subject"]
            t.add_row(r["subject"], r["fault"], *_cell_texts(r))
        tables.append(t)
    if (rows := results.get("subjects")) is not None:
        t = Table(title="Subjects: image, cluster up until healthy (s; one at a time; TTD/TTR per fault kind are in "
                        "the subject x fault table)", title_justify="left")
        for col in ("subject", "images (MB)", "build", "up → healthy"):
            t.add_column(col, justify="left" if col in ("subject", "images (MB)") else "right")
        for r in rows:
            t.add_row(r["subject"], ", ".join(f"{k} {v}" for k, v in r["images"].items()), _fmt(r["build_s"]),
                      f"FAILED: {r['error']}" if r.get("error") else _fmt(r["up_s"]))
        tables.append(t)
    if (r := results.get("loadgen")) is not None:
        tp = r["throughput"]
        t = Table(title=f"Load generator beside wrk: same endpoint ({tp['endpoint']}, one member), same requests "
                        f"(JSON put/range 50/50 over 32 keys), {tp['concurrency']} connections/clients, closed loop, "
                        f"wrk -t{tp['wrk_threads']}; medians of {tp['rounds']} rounds of {tp['seconds']:g}s, ratio = "
                        f"median of the rounds' ours/wrk", title_justify="left")
        for col in ("generator", "answered ops/s", "ratio to wrk", "CPU s per 1,000 ops", "p50 / p99 ms", "errors",
                    "host busy %"):
            t.add_column(col, justify="left" if col == "generator" else "right")
        labels = {"wrk": "wrk (C, Lua script)", "closed": "ours: one_op × clients (closed loop)",
                  "open": f"ours: _open_loop at {tp['open_rate']:g}/s (not sent: not counted)",
                  "floor": "floor: bare Python client (uvloop, httptools, requests built once, nothing recorded)"}
        for side, label in labels.items():
            s = tp["summary"][side]
            closed = side == "closed"
            ratio = "" if side == "wrk" else f"{_fmt(s['ratio_to_wrk'])}" + (" (aim ≥0.9)" if closed else "")
            cpu = _fmt(s["cpu_per_1k_ops_s"]) + (" (aim ≤0.08)" if closed else "")
            t.add_row(label, _fmt(s["ops_s"]), ratio, cpu,
                      f"{_fmt(s['p50_ms'])} / {_fmt(s['p99_ms'])}", str(s["errors"]), _fmt(s["host_busy_pct"]))
        tables.append(t)
        t = Table(title="Open-loop rate: run_load_window, 1 s windows back to back, on a healthy copy (all members); "
                        "rates over the wall time, gaps between windows included; answered as a run counts it (a "
                        "compare that found another value is an answer) (aim: within 5%)",
                  title_justify="left")
        for col in ("target ops/s", "in flight ≤", "windows", "sent ops/s", "answered ops/s", "not sent", "errors",
                    "window overrun ms", "p50 / p99 ms", "CPU s per 1,000 ops", "held"):
            t.add_column(col, justify="right")
        for row in r["rate"]:
            t.add_row(f"{row['target_ops_s']:g}", str(row.get("concurrency", "")), str(row["windows"]),
                      f"{row['sent_ops_s']:.1f} ({row['sent_deviation_pct']:+.1f}%)",
                      f"{row['answered_ops_s']:.1f} ({row['answered_deviation_pct']:+.1f}%)", str(row["not_sent"]),
                      str(row["errors"]), f"{row['overrun_ms_per_window']:.1f}",
                      f"{_fmt(row['p50_ms'])} / {_fmt(row['p99_ms'])}", _fmt(row["cpu_per_1k_ops_s"]),
                      "yes" if row["held"] else "NO")
        tables.append(t)
        if rows := r.get("up_to_wrk"):
            wrk = tp["summary"]["wrk"]["ops_s"]
            t = Table(title=f"Open loop up to wrk's rate ({wrk:g} ops/s): the same member and "
                            f"requests as wrk, {tp['seconds']:g} s each, at most {rows[0]['concurrency']} in flight "
                            "(aim: answered within 5%)", title_justify="left")
            for col in ("share of wrk", "target ops/s", "answered ops/s", "not sent", "errors", "p50 / p99 ms",
                        "held"):
                t.add_column(col, justify="right")
            for row in rows:
                t.add_row(f"{row['share_of_wrk']:.0%}", f"{row['target_ops_s']:g}",
                          f"{row['answered_ops_s']:.1f} ({row['answered_deviation_pct']:+.1f}%)",
                          str(row["not_sent"]), str(row["errors"]), f"{_fmt(row['p50_ms'])} / {_fmt(row['p99_ms'])}",
                          "yes" if row["held"] else "NO")
            tables.append(t)
    if (r := results.get("powerfs")) is not None:
        t = Table(title=f"The power-loss layer's cost: one etcd member with its data on it, beside one without; "
                        f"closed loop, {r['concurrency']} clients, put/range 50/50 (every put fsynced); medians of "
                        f"{r['rounds']} rounds of {r['seconds']:g} s", title_justify="left")
        for col in ("member's data", "answered ops/s", "ratio", "p50 / p99 ms", "helper CPU s per 1,000 ops"):
            t.add_column(col, justify="left" if col == "member's data" else "right")
        t.add_row("in its container", _fmt(r["plain_ops_s"]), "", f"{_fmt(r['plain_p50_ms'])} / "
                  f"{_fmt(r['plain_p99_ms'])}", "")
        t.add_row("on the layer", _fmt(r["layered_ops_s"]), _fmt(r["ratio"]), f"{_fmt(r['layered_p50_ms'])} / "
                  f"{_fmt(r['layered_p99_ms'])}", _fmt(r["helper_cpu_per_1k_ops_s"]))
        tables.append(t)
    if (r := results.get("safety")) is not None:
        t = Table(title=f"Safety checker: {r['seconds_of_load']:g} s of history at {r['rate_ops_s']:g} ops/s "
                        f"(synthetic, with a fault; verdict {r['verdict']})", title_justify="left")
        for col in ("figure", "value", "aim"):
            t.add_column(col, justify="right" if col == "value" else "left")
        t.add_row("operations", str(r["ops"]), "")
        t.add_row("read the history (s)", _fmt(r["read_s"]), "")
        t.add_row("run every checker (s)", _fmt(r["check_s"]), "")
        t.add_row("total (s)", _fmt(r["total_s"]), "≤ 5")
        t.add_row("operations checked per second", str(r["ops_checked_per_s"]), "")
        t.add_row("history size per minute of load (KiB)", _fmt(r["history_kib_per_minute"]), "")
        tables.append(t)
    if rows := results.get("safety_models"):
        t = Table(title=f"Safety models on adversarial histories ({safety.PROCESSES} processes, about "
                        f"{safety.MODEL_OPS} operations, {safety.INFO_SHARE:.0%} of the writes of unknown outcome); "
                        "aim: well under a second", title_justify="left")
        for col in ("model", "keys", "ops", "info", "legal: verdict", "s", "broken", "verdict", "s "):
            t.add_column(col, justify="right" if col.strip() in ("keys", "ops", "info", "s") else "left")
        for row in rows:
            t.add_row(row["model"], str(row["keys"]), str(row["ops"]), str(row["info"]), row["legal_verdict"],
                      _fmt(row["legal_s"]), row["broken"], row["stale_verdict"], _fmt(row["stale_s"]))
        tables.append(t)
    if (r := results.get("safety_list_append")) is not None:
        t = Table(title=f"List-append checker: {r['txns']} transactions from {r['processes']} processes, "
                        f"{r['info_share']:.0%} of unknown outcome (synthetic)", title_justify="left")
        for col in ("history", "check (s)", "verdict", "what it found"):
            t.add_column(col, justify="right" if col == "check (s)" else "left")
        for name, label in (("serializable", "strictly serializable"), ("snapshot", "snapshot isolation"),
                            ("failover", "3 s of appends lost in a failover")):
            t.add_row(label, _fmt(r[name]["check_s"]), r[name]["verdict"],
                      f"{r[name]['detail']}; lost appends: {r[name]['lost_appends']}")
        tables.append(t)
    return tables


def _parallel_table(steps: list[dict], rate: float, window_s: float) -> Table:
    """The sweep: one column per step, so CPU per run reads left to right as the copies grow."""
    label = "the product's default" if rate == DEFAULT_LOAD_RATE else "NOT the product's default"
    if window_s != DEFAULTS["load_window_s"]:
        label += f", in {window_s:g} s windows, NOT the default"
    priority = "real-time (CHAOS_WORKER_REALTIME=1)" if realtime_wanted() else "nice -10 (the default)"
    t = Table(title=f"Parallel subjects, one fresh worker process per step, load {rate:g} ops/s per run ({label}); "
                    f"worker and server priority {priority}", title_justify="left")
    t.add_column("figure")
    for s in steps:
        t.add_column(f"{s['subjects']} at once", justify="right")
    t.add_column("notes")
    base = steps[0]["worker_cpu_s_per_run"]

    def row(label: str, fn, note: str = "") -> None:
        t.add_row(label, *(fn(s) for s in steps), note)

    row("passed", lambda s: f"{s['passed']}/{s['subjects']}", "aim: all")
    row("wall (s)", lambda s: _fmt(s["wall_s"]), "first start → last result")
    row("worker CPU (s)", lambda s: _fmt(s["worker_cpu_s"]), "every thread of the worker process")
    row("worker CPU per run (s)", lambda s: _fmt(s["worker_cpu_s_per_run"]))
    row("  × the first step's", lambda s: f"{s['worker_cpu_s_per_run'] / base:.2f}" if base else "-",
        "1.00 = grows linearly with the runs")
    row("load ops answered / offered",
        lambda s: f"{s.get('load_ops_answered', '-')} / {s.get('load_ops_offered', '-')}",
        "offered: sent or capped, by the windows")
    row("load windows", lambda s: str(s.get("load_windows", "-")), "each an activity: its orchestration costs the "
        "worker and the Temporal server")
    row("worker CPU ms per answered op", lambda s: _fmt(s.get("worker_cpu_ms_per_answered_op")),
        "everything the worker did, over the load it carried")
    row("worker CPU, % of one core", lambda s: _fmt(s["worker_cpu_pct"]), "mean over the wall time")
    row("  1 s samples p50 / max", lambda s: f"{_fmt(s['worker_cpu_pct_1s']['p50'])} / "
        f"{_fmt(s['worker_cpu_pct_1s']['max'])}", "2 cores = 200%")
    row("event-loop thread % p50 / max", lambda s: f"{_fmt(s['event_loop_thread_pct_1s']['p50'])} / "
        f"{_fmt(s['event_loop_thread_pct_1s']['max'])}", "the worker's main thread")
    row("  seconds ≥ 90% of a core", lambda s: str(s["event_loop_saturated_s"]), "a saturated event loop")
    row("  run-queue wait % p50 / max", lambda s: f"{_fmt(s['event_loop_runqueue_wait_pct_1s']['p50'])} / "
        f"{_fmt(s['event_loop_runqueue_wait_pct_1s']['max'])}", "runnable, but no core free: starved")
    row("machine CPU % p50 / max", lambda s: f"{_fmt(s['machine_cpu_pct_1s']['p50'])} / "
        f"{_fmt(s['machine_cpu_pct_1s']['max'])}", "every process, 2 cores = 200%")
    row("load average before", lambda s: " ".join(s["loadavg_before"]))
    row("docker CLI children CPU (s)", lambda s: _fmt(s["docker_cli_cpu_s"]), "reaped by the worker")
    row("the etcd copies' CPU (s)", lambda s: _fmt(s.get("subjects_cpu_s")), "their containers' cgroups (≥)")
    row("CPU (s) by process, top 5", lambda s: ", ".join(f"{name} {cpu:g}" for name, cpu in
                                                         list(s.get("cpu_s_by_command", {}).items())[:5]),
        "every process alive at the end")
    row("Temporal server RPCs / per load window", lambda s: f"{_fmt(s.get('server_rpcs'))} / "
        f"{_fmt(s.get('server_rpcs_per_load_window'))}", "its frontend's requests, every kind")
    row("  top 3 by operation", lambda s: ", ".join(f"{key.split()[-1]} {n}" for key, n in list(
        (s.get("server_requests_by_operation") or {}).items())[:3]) or "-", "the JSON has 15, database calls too")
    row("worker RSS end / peak (MB)", lambda s: f"{s['worker_rss_mb']} / {s['worker_peak_rss_mb']}")
    row("runs whose load hardly ran", lambda s: f"{s.get('load_hardly_ran', '-')}/{s['subjects']}",
        "answered < half its rate before the fault: aim 0")
    row("load before the fault ops/s p50 / min", lambda s: f"{_fmt(s['load_baseline_ops_s']['p50'])} / "
        f"{_fmt(s['load_baseline_ops_s']['min'])}", "per run")
    row("TTD p50 / max (s)", lambda s: f"{_fmt(s['ttd_s']['p50'])} / {_fmt(s['ttd_s']['max'])}")
    row("TTR p50 / max (s)", lambda s: f"{_fmt(s['ttr_s']['p50'])} / {_fmt(s['ttr_s']['max'])}")
    row("workflow task timeouts by kind", lambda s: ", ".join(f"{k.lower()} {n}" for k, n in
                                                             s.get("workflow_task_timeout_kinds", {}).items()) or "-",
        f"schedule_to_start: the sticky worker did not take it within {STICKY_TIMEOUT.total_seconds():g} s")
    row("activity / workflow task timeouts", lambda s: f"{s['activity_timeouts']} / {s['workflow_task_timeouts']}",
        "attempts that ran out of retries / workflow tasks")
    row("copies unhealthy after the step", lambda s: str(len(s["unhealthy_after"])), "aim: 0 (a fault left behind)")
    for s in steps:
        for kind, n in s["activity_failure_kinds"].items():
            t.add_row(f"failed attempts ({s['subjects']} at once)", *("" for _ in steps), f"{n} × {kind}")
        for failure in s["failures"]:
            t.add_row(f"FAILED ({s['subjects']} at once)", *("" for _ in steps), failure[:200])
        for project, violations in s["unhealthy_after"].items():
            t.add_row(f"UNHEALTHY after ({s['subjects']} at once)", *("" for _ in steps),
                      f"{project}: {'; '.join(violations)}"[:200])
    return t


async def bring_up(copies: list[SubjectCopy]) -> None:
    await asyncio.gather(*(asyncio.to_thread(c.up) for c in copies))
    checks = await asyncio.gather(*(c.wait_healthy(timeout=120) for c in copies))
    sick = [f"{c.instance.project}: {'; '.join(r.violations)}" for c, r in zip(copies, checks) if not r.ok]
    if sick:
        raise RuntimeError(f"subject copies never became healthy: {sick}")


async def settle(most_busy: float = 0.5, seconds: int = 3, limit_s: float = 90) -> float:
    """Wait until the machine is quiet (at most `most_busy` of its CPUs busy for `seconds` 1-s samples in a row,
    or `limit_s`): etcd copies just started are busy for a while. Returns the seconds waited."""
    t0, quiet = time.monotonic(), 0
    busy, total = machine_busy()
    while quiet < seconds and time.monotonic() - t0 < limit_s:
        await asyncio.sleep(1)
        busy2, total2 = machine_busy()
        quiet = quiet + 1 if (busy2 - busy) <= most_busy * (total2 - total) else 0
        busy, total = busy2, total2
    return round(time.monotonic() - t0, 1)


def ahead_as_embedded(address: str) -> None:
    """The product starts its embedded server ahead of the subjects (runtime/devserver.py, at real-time priority
    with CHAOS_WORKER_REALTIME=1); so does the benchmark, whose server the SDK starts: its process is found by its
    port."""
    port = address.rsplit(":", 1)[1]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"start-dev" in argv and port.encode() in argv:
                raise_threads(pid)
                if realtime_wanted():
                    realtime_threads(pid, reset_on_fork=False)


async def main(args: argparse.Namespace) -> int:
    # The rules engine diagnoses: Claude's answer time would drown the orchestration figures (and cost money).
    os.environ.pop("ANTHROPIC_API_KEY", None)
    started = datetime.now(timezone.utc)
    run_id = f"bench-{uuid.uuid4().hex[:6]}"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    logs = RESULTS / f"{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    n_copies = 1 if args.skip_parallel else max(args.parallel)  # the largest step's; the others reuse them
    taken: set[int] = set()
    copies = []
    for k in range(n_copies):
        base = free_port_base(3, *PORTS, taken=taken)
        taken.add(base)
        # Named after this machine's host, as `starter.py chaos` names it: subject activities go to the host's queue.
        ref = SubjectRef(name="etcd", project=f"{run_id}-{k}", port_base=base, host=default_host())
        copies.append(SubjectCopy(ref))
    results: dict = {
        "started_at": started.isoformat(timespec="seconds"), "run_id": run_id,
        "params": {"runs": args.runs, "detect_interval_s": args.detect_interval,
                   "check_timeout_s": args.check_timeout, "workflow_task_timeout_s": args.workflow_task_timeout,
                   "load_concurrency": args.load_concurrency, "worker_realtime": realtime_wanted(),
                   "overhead_pairs": args.overhead_pairs,
                   "parallel": args.parallel, "parallel_load_rate": args.parallel_load_rate,
                   "parallel_load_window_s": args.parallel_load_window,
                   "subjects": args.subjects, "faults": args.faults, "fault_runs": args.fault_runs,
                   "fault_detect_timeout_s": scenarios.FAULT_DETECT_TIMEOUT_S,
                   "fault_subjects_concurrent": not args.fault_serial, "stress_runs": args.stress_runs,
                   "loadgen_seconds": args.loadgen_seconds, "loadgen_rounds": args.loadgen_rounds,
                   "loadgen_rates": args.loadgen_rates, "loadgen_windows": args.loadgen_windows},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]},
    }
    env = None
    lab = None
    try:
        if not args.skip_startup:  # CPU only, as the safety figures
            console.print("[bold]startup[/]: the command line, and replaying workflow code")
            results["startup"] = {"cli": startup.cli_figures(), "sandbox": await startup.sandbox_figures()}
        if not args.skip_safety:  # CPU only: measured first, before any cluster loads the machine
            console.print("[bold]safety[/]: checking a minute of history")
            results["safety"] = safety.figures()
            console.print("[bold]safety models[/]: each model on long adversarial histories")
            results["safety_models"] = safety.model_figures()
            results["safety_list_append"] = safety.list_append_figures()
        if not args.skip_powerfs:  # two containers of its own, removed before the copies come up
            console.print("[bold]power-loss layer[/]: one etcd member on it beside one without")
            results["powerfs"] = powerfs.figures(run_id, free_port_base(2, low=29000, high=29990),
                                                 args.loadgen_seconds, args.loadgen_rounds, args.load_concurrency,
                                                 args.check_timeout, say=console.print)
        # One copy until the sweep: 19 idle clusters beside the single-run figures (57 etcd processes) made them
        # those of a busy machine (session 21: overhead +15.4 % with them up, +5.0 % without).
        console.print(f"[bold]{run_id}[/]: starting a private Temporal dev server and 1 etcd copy")
        metrics_port = free_port_base(1, low=29900, high=29990)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
            search_attributes=list(Attr.ALL), dev_server_log_level="error",
            dev_server_extra_args=[*SERVER_SETTINGS, "--metrics-port", str(metrics_port)])
        ahead_as_embedded(env.client.service_client.config.target_host)
        t0 = time.monotonic()
        await bring_up(copies[:1])
        results["bring_up_s"] = round(time.monotonic() - t0, 2)
        console.print(f"  1 copy healthy in {results['bring_up_s']}s")
        lab = scenarios.Lab(
            client=env.client, address=env.client.service_client.config.target_host, task_queue=run_id,
            run_id=run_id, copies=copies, logs=logs, say=console.print,
            detect_interval_s=args.detect_interval, check_timeout_s=args.check_timeout,
            load_concurrency=args.load_concurrency, parallel_load_rate=args.parallel_load_rate,
            parallel_load_window_s=args.parallel_load_window,
            server_metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            workflow_task_timeout=timedelta(seconds=args.workflow_task_timeout))
        if not args.skip_ttd:
            console.print(f"[bold]TTD/TTR[/]: {args.runs} runs")
            results["ttd_ttr"] = await scenarios.ttd_ttr(lab, args.runs)
        if not args.skip_overhead:
            console.print(f"[bold]overhead[/]: {args.overhead_pairs} workflow/plain pairs")
            results["overhead"] = await scenarios.overhead(lab, args.overhead_pairs)
        # The load generator's figures fill the copy (wrk and our closed loop at about 4,000 ops/s, 5 s a round, 3
        # rounds each, in session 21's table run): a member restarted after that takes longer, and more variably, to
        # answer again, which made the overhead's wait until healthy differ by up to 0.12 s between its two sides
        # (session 21: +8.5 % to +16.2 %). So the chaos runs come first, the TTD runs warming the worker up for the
        # overhead pairs.
        if not args.skip_loadgen:  # CPU-bound: compared with wrk on the same member, in the same run
            console.print("[bold]load generator[/]: beside wrk, and the open loop's rate")
            copy = copies[0]
            results["loadgen"] = await loadgen.figures(
                copy.ref, copy.instance.subject.endpoints(copy.instance.port_base)["etcd1"],
                seconds=args.loadgen_seconds, rounds=args.loadgen_rounds, concurrency=args.load_concurrency,
                timeout=args.check_timeout, rates=args.loadgen_rates, windows=args.loadgen_windows,
                open_concurrency=args.loadgen_open_concurrency, say=console.print)
        if not args.skip_resume:
            points = tuple(k for k in args.resume_points.split(",") if k)
            console.print(f"[bold]resume[/]: SIGKILL a worker at each of {len(points)} points of a run")
            results["resume"] = await resume.resume_all(lab, points)
        if not args.skip_stress:
            console.print(f"[bold]busy host[/]: {args.stress_runs} runs beside stress-ng")
            results["stress"] = await stress.stress(lab, args.stress_runs, os.cpu_count() or 1)
        if not args.skip_parallel:
            t0 = time.monotonic()
            await bring_up(copies[1:n_copies])
            results["parallel_bring_up_s"] = round(time.monotonic() - t0, 2)
            # Started just now, the copies are busy for a while (the first try ran the sweep at once: 54 heartbeat
            # timeouts in its first step, against none with copies up for minutes).
            results["parallel_settle_s"] = await settle()
            console.print(f"  {n_copies - 1} more copies for the sweep healthy in {results['parallel_bring_up_s']}s, "
                          f"the machine quiet {results['parallel_settle_s']}s later")
            results["parallel"] = []
            for step, k in enumerate(args.parallel):
                console.print(f"[bold]parallel[/]: {k} subjects at once, one fresh worker, "
                              f"{args.parallel_load_rate:g} ops/s each")
                try:
                    results["parallel"].append(await scenarios.parallel(lab, k, step))
                except Exception as exc:  # noqa: BLE001 - keep the steps measured so far, say why the sweep stopped
                    results["parallel_stopped"] = f"{k}-copy step: {type(exc).__name__}: {exc}"
                    console.print(f"  [red]sweep stopped[/]: {results['parallel_stopped']}")
                    break
                p = results["parallel"][-1]
                console.print(f"  {p['passed']}/{k} passed in {p['wall_s']}s; worker CPU {p['worker_cpu_s']}s "
                              f"({p['worker_cpu_s_per_run']}s per run), peak RSS {p['worker_peak_rss_mb']} MB")
        if not (args.skip_subjects and args.skip_faults):
            # Brought up one at a time, so each subject's "up → healthy" is its own, not the sum of a crowd's.
            ready, rows = [], []
            for k, name in enumerate(n for n in args.subjects.split(",") if n):
                console.print(f"[bold]subject {name}[/]: images, cluster up")
                ref = subject_ref(name)
                base = free_port_base(get_subject(name).ports, *PORTS, taken=taken)
                copy = SubjectCopy(ref.model_copy(update={"project": f"{run_id}-s{k}", "port_base": base,
                                                          "host": default_host()}))
                taken.add(base)
                copies.append(copy)  # torn down with the others, whatever happens
                rows.append(row := await scenarios.subject_figures(lab, copy, args.rebuild_images))
                if row["error"] is None:
                    ready.append(copy)
            if not args.skip_subjects:
                results["subjects"] = rows
        if not args.skip_faults:
            kinds = [k for k in args.faults.split(",") if k]
            console.print(f"[bold]fault matrix[/]: {len(ready)} subject(s) x {', '.join(kinds)}, {args.fault_runs} "
                          f"runs each, subjects {'one at a time' if args.fault_serial else 'side by side'}")
            results["faults"] = await scenarios.fault_matrix(lab, ready, kinds, args.fault_runs,
                                                             concurrent=not args.fault_serial)
            results["faults"] += [scenarios.skipped_cell(r["subject"], kind, f"not run: the copy {r['error']}")
                                  for r in rows if r["error"] is not None for kind in kinds]
    finally:
        console.print("tearing down: workers, etcd copies, dev server")
        if lab is not None:
            lab.stop_workers()
        await asyncio.gather(*(asyncio.to_thread(c.down) for c in copies), return_exceptions=True)
        if env is not None:
            await env.shutdown()
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    out = args.out or RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    out_console = Console(width=max(Console().width, 160))
    for table in render(results):
        out_console.print(table)
    console.print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
