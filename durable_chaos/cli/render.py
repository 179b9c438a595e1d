"""Rich renderings of a run: the live progress view and the final report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from durable_chaos.cli.facts import RunFacts
from durable_chaos.cli.retries import Retrying
from durable_chaos.contracts import (
    ChaosReport,
    Counterexample,
    Diagnosis,
    FaultEffect,
    FaultState,
    LoadSummary,
    LoadWindow,
    OpView,
    PhaseLatency,
    Progress,
    SafetyReport,
    Stage,
    StepReport,
)
from durable_chaos.wording import trip_reason

STAGES = [Stage.PREFLIGHT, Stage.COUNTDOWN, Stage.INJECT, Stage.DETECT, Stage.DIAGNOSE, Stage.RESTORE, Stage.VERIFY,
          Stage.SAFETY]


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


BARS = "▁▂▃▄▅▆▇█"


def during_fault(w: LoadWindow, p: Progress) -> bool:
    """A window overlapping the time between the kill and the start of its restore."""
    return (p.injected_at is not None and w.end > p.injected_at
            and (p.restore_started_at is None or w.start < p.restore_started_at))


def load_strip(p: Progress) -> Text:
    """One bar per recent load window, height = ops/s: red while the fault is on, green otherwise."""
    top = max((w.ops_per_s for w in p.recent_windows), default=0.0) or 1.0
    strip = Text()
    for w in p.recent_windows:
        bar = BARS[min(len(BARS) - 1, int(w.ops_per_s / top * (len(BARS) - 1) + 0.5))]
        strip.append(bar, style="bold red" if during_fault(w, p) else "green")
    strip.append(f"  (max {top:g} ops/s)", style="dim")
    return strip


def stage_strip(p: Progress) -> Text:
    """Every stage in order: the finished ones ticked, the current one highlighted, those to come dimmed. A diagnosis
    made beside the undo is shown running until it answers, whatever stage the run is in."""
    # A step's hold comes after its diagnosis, and a wait step (like verify) waits for the steady state.
    stage = {Stage.HOLD: Stage.DIAGNOSE, Stage.WAIT: Stage.VERIFY}.get(p.stage, p.stage)
    current = len(STAGES) if stage == Stage.DONE else STAGES.index(stage) if stage in STAGES else 0
    strip = Text()
    for i, stage in enumerate(STAGES):
        if i < current and stage == Stage.DIAGNOSE and p.diagnosing:
            strip.append(f" … {stage.value} ", style="yellow")
        elif i < current:
            strip.append(f" ✓ {stage.value} ", style="green")
        else:
            strip.append(f" {stage.value} ", style="bold reverse" if i == current else "dim")
        strip.append(" ")
    return strip


def step_rows(steps: list[StepReport]) -> list[tuple[str, str]]:
    """One line per fault of a multi-step run: where it was, what it hit, its state and times, whether it did
    anything."""
    rows = []
    for s in steps:
        where = f"step {s.step}" + (f" lane {s.lane}" if s.lane else "") + (f" ({s.name})" if s.name else "")
        where += f" at +{s.drawn_at_s:g}s" if s.drawn_at_s is not None else ""
        effect = ("" if s.effect is None else "" if s.effect.took_effect else ", never took effect")
        rows.append((where, f"{s.fault_label} {', '.join(s.targets)}: {s.state.value}, TTD "
                            f"{seconds_text(s.time_to_detect_s)}, TTR {seconds_text(s.time_to_restore_s)}{effect}"))
    return rows


def state_text(fault_state: str) -> str:
    return "not injected yet" if fault_state == FaultState.NONE.value else fault_state


def progress_view(p: Progress, url: str, retrying: Sequence[Retrying] = ()) -> Panel:
    """The run's progress; `retrying`: its activities the server is retrying (cli/retries.py)."""
    now = datetime.now(timezone.utc)
    stages = stage_strip(p)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    elapsed = (now - p.started_at).total_seconds() if p.started_at else 0.0
    grid.add_row("stage", f"{p.stage.value}: {p.message}")
    if p.step_count > 1:
        grid.add_row("step", f"{p.step or 1} of {p.step_count}")
    grid.add_row("elapsed", f"{elapsed:.1f} s")
    grid.add_row("target", ", ".join(p.targets) or p.target or "(not chosen yet)")
    state_style = {FaultState.INJECTED: "bold red", FaultState.RESTORED: "green"}.get(p.fault_state, "")
    grid.add_row("fault", Text.assemble(f"{p.fault_label or p.fault}: ",
                                        (state_text(p.fault_state.value), state_style)))
    left = p.countdown_seconds_left(now)
    if left:
        grid.add_row("countdown", Text(str(left), style="bold yellow"))
    if p.last_window:
        w = p.last_window
        grid.add_row("load", Text(f"{w.ops_per_s:g} ops/s, {w.errors} errors, p95 {w.p95_ms or 0:g} ms",
                                  style="red" if during_fault(w, p) else "green"))
        grid.add_row("ops/s per window", load_strip(p))
    if p.stage == Stage.DETECT and p.detect_deadline:
        grid.add_row("detect", f"{max(0.0, (p.detect_deadline - now).total_seconds()):.1f} s left before timeout")
    grid.add_row("time to detect", seconds_text(p.time_to_detect_s))
    if p.diagnosis:  # one short line, e.g. "etcd3 ✓ correct · rules engine (no API key)"
        grid.add_row("diagnosis", Text.assemble(f"{', '.join(p.diagnosis.affected_nodes) or 'nobody'} ",
                                                _grade(p.diagnosis), f" · {diagnosis_source(p.diagnosis)}"))
    grid.add_row("time to restore", seconds_text(p.time_to_restore_s))
    if len(p.steps) > 1:
        grid.add_row("faults", "\n".join(f"{where}: {text}" for where, text in step_rows(p.steps)))
    if p.waiting_for_host and p.host_waiting_since:
        grid.add_row("host", Text(f"{p.waiting_for_host}: no worker has taken the restore for "
                                  f"{(now - p.host_waiting_since).total_seconds():.0f} s; start one there: "
                                  f"python worker.py --host {p.waiting_for_host}", style="bold yellow"))
    retrying_row(grid, retrying, now)
    title = f"chaos run on {p.subject}" + (f" (host {p.host})" if p.host else "")
    return Panel(Group(stages, grid), title=title, subtitle=url)


def retrying_row(grid: Table, retrying: Sequence[Retrying], now: datetime) -> None:
    if retrying:
        grid.add_row("retrying", Text("\n".join(r.text(now) for r in retrying), style="bold yellow"))


def facts_view(f: RunFacts, summary: str | None, url: str, retrying: Sequence[Retrying] = ()) -> Panel:
    """A run as the server alone knows it (search attributes, memo, pending activities): what `status` shows when no
    worker serves it."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{f.workflow_id} / {f.run_id}")
    if summary:
        grid.add_row("what", summary)
    grid.add_row("status", f"{f.status or '?'} since {f.started_at:%Y-%m-%d %H:%M:%S} UTC")
    grid.add_row("stage", f.stage or "not started")
    grid.add_row("target", ", ".join(f.targets or []) or f.target or "(not chosen yet)")
    fault_state = f.fault_state or FaultState.NONE.value
    grid.add_row("fault", Text.assemble(f"{f.fault_label or f.fault or '?'}: ", (
        state_text(fault_state), {"injected": "bold red", "restored": "green"}.get(fault_state, ""))))
    if f.time_to_detect_s is not None:
        grid.add_row("time to detect", seconds_text(f.time_to_detect_s))
    if f.time_to_restore_s is not None:
        grid.add_row("time to restore", seconds_text(f.time_to_restore_s))
    if f.verdict:
        grid.add_row("verdict", f.verdict)
    if f.waiting_for_host:
        grid.add_row("host", Text(f"waiting for a worker on host {f.waiting_for_host} to take the restore",
                                  style="bold yellow"))
    retrying_row(grid, retrying, datetime.now(timezone.utc))
    where = f" (host {f.host})" if f.host else ""
    return Panel(grid, title=f"chaos run on {f.subject or '?'}{where}", subtitle=url)


def diagnosis_source(d: Diagnosis) -> str:
    """Who diagnosed, in a few words: "Claude (model)", "rules engine (no API key)"."""
    if d.source == "claude":
        return f"Claude ({d.model})" if d.model else "Claude"
    if d.fallback_reason:
        words = d.fallback_reason.replace("_", " ").replace("api", "API").replace("claude", "Claude")
        return f"rules engine ({words})"
    return "rules engine"


def _grade(d: Diagnosis) -> Text:
    if d.correct:
        return Text("✓ correct", style="bold green")
    return Text("✗ wrong", style="bold red")


def diagnosis_panel(d: Diagnosis) -> Panel:
    """The diagnosis itself. Who made it and whether it named the right node are in the verdict's reasons."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if d.model:
        grid.add_row("model", d.model)
    grid.add_row("summary", d.summary)
    grid.add_row("root cause", d.root_cause)
    grid.add_row("affected", ", ".join(d.affected_nodes) or "-")
    if d.unknown_nodes:
        grid.add_row("dropped", Text(f"not members of the subject: {', '.join(d.unknown_nodes)}", style="yellow"))
    grid.add_row("evidence", "\n".join(f"- {e}" for e in d.evidence) or "-")
    grid.add_row("actions", "\n".join(f"- {a}" for a in d.suggested_actions) or "-")
    grid.add_row("confidence", f"{d.confidence:.0%}")
    border = "default" if d.correct is None else ("green" if d.correct else "red")
    return Panel(grid, title="diagnosis", border_style=border)


def load_text(load: LoadSummary) -> str:
    """The run's load in one line: what the fault did to client traffic."""
    def ops(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    return (f"baseline {ops(load.baseline_ops_s)} ops/s, worst during fault {ops(load.worst_fault_ops_s)} ops/s, "
            f"{load.errors} errors in {len(load.windows)} windows")


def _few(items: list, limit: int = 4) -> str:
    """A long list cut to its first and last items: "m1@3, m2@4, m3@5 … m12@16 (12)"."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit - 1])} … {items[-1]} ({len(items)})"


def _delivered(pairs) -> str:
    """[[id, sequence], ...] as "m1@3, m2@4" (a message id at its stream sequence)."""
    if not isinstance(pairs, list):
        return "?"
    return _few([f"{p[0]}@{p[1]}" if isinstance(p, list) and len(p) == 2 else str(p) for p in pairs]) or "nothing"


def _micro(m) -> str:
    """A transaction's micro-op: ["append", "k3", 5] -> "append k3 5"; ["r", "k1", [1, 2]] -> "read k1 -> [1 2]"."""
    if not (isinstance(m, list) and len(m) == 3):
        return str(m)
    f, key, value = m
    if f == "append":
        return f"append {key} {value}"
    if value is None:  # not known: the invoke, or a transaction that did not commit
        return f"read {key}"
    return f"read {key} -> " + ("[" + " ".join(map(str, value)) + "]" if isinstance(value, list) else str(value))


def op_words(op: OpView) -> str:
    """What one operation did, in a few words: "cas k1 from 3 to 4", "fetch -> m1@3, m2@4", "append k3 5, read k1
    -> [1 2]"."""
    key = "" if op.key is None else f" {op.key}"
    value = op.value
    if op.kind == "write":
        return f"write {op.key}={value}" if op.key is not None else f"write {value}"
    if op.kind == "read":
        return f"{'final read' if op.final else 'read'}{key} -> {value if value is not None else 'nothing'}"
    if op.kind == "cas" and isinstance(value, list) and len(value) == 2:
        return f"cas{key} from {value[0]} to {value[1]}"
    if op.kind == "publish" and isinstance(value, dict):
        who = ", ".join(f"{k} {value[k]}" for k in ("publisher", "n") if k in value)
        return f"publish {value.get('id')}" + (f" ({who})" if who else "")
    if op.kind == "fetch":
        return "fetch" + ("" if value is None else f" -> {_delivered(value)}")
    if op.kind == "drain" and isinstance(value, dict):
        return f"final drain of {value.get('replica', '?')} -> {_delivered(value.get('messages'))}"
    if op.kind == "txn" and isinstance(value, list):
        return "txn " + ", ".join(_micro(m) for m in value)
    return f"{op.kind}{key}" + ("" if value is None else f" {value}")


def op_text(op: OpView) -> str:
    """One operation of a counterexample: "12:00:01.234 write k03=v7 ok, token 55 (2.1 ms)"."""
    token = f", token {op.token}" if op.token is not None else ""
    error = f": {op.error}" if op.error else ""
    return (f"{op.invoked_at:%H:%M:%S.%f}"[:-3] + f" {op_words(op)} {op.outcome}{token}{error} "
            f"(process {op.process}, {op.latency_ms:g} ms)")


def txn_name(index: int) -> str:
    """A transaction of a cycle by its place among the counterexample's ops: T1, T2..."""
    return f"T{index + 1}"


def stuck_words(cx: Counterexample) -> str:
    """What the counterexample's stuck operation is: where the linearizability search found no legal order, or,
    for the other checkers, the operation that shows the violation."""
    return "no legal order places this" if cx.checker == "linearizability" else "the violation shows here"


def counterexample_lines(cx: Counterexample) -> list[str]:
    """Its summary, its operations (the stuck one marked; a cycle's transactions named T1, T2...), then a cycle's
    dependencies edge by edge."""
    lines = [f"{cx.anomaly}: {cx.summary}" if cx.anomaly else cx.summary]
    for i, op in enumerate(cx.ops):
        mark = f"stuck here ({stuck_words(cx)}): " if i == cx.stuck else f"{txn_name(i)}: " if cx.cycle else ""
        lines.append(mark + op_text(op))
    lines += [f"{txn_name(e.source)} -{e.kind}-> {txn_name(e.target)}: {e.why}" for e in cx.cycle]
    return lines


def _phase_text(name: str, p: PhaseLatency) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    return f"{name} p50 {ms(p.p50_ms)} / p99 {ms(p.p99_ms)} ms ({p.ops} ops, {p.errors} errors)"


# How the report names each data model the checkers held a history to.
MODEL_WORDS = {
    "register": "register per key (read, write)",
    "cas-register": "register per key with compare-and-set (read, write, cas)",
    "queue": "queue (publish, fetch, drain every replica)",
    "list-append": "transactions appending to lists (list-append, Elle-style)",
}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def safety_rows(s: SafetyReport) -> list[tuple[str, str | list[str]]]:
    """The data safety section, as (label, text or list of lines): the terminal, Markdown and HTML all draw it."""
    rows: list[tuple[str, str | list[str]]] = [("verdict", s.verdict)]
    if s.model:
        rows.append(("model", MODEL_WORDS.get(s.model, s.model)))
    changes = "acknowledged writes" if s.model in (None, "register", "cas-register") else \
        "acknowledged publishes" if s.model == "queue" else "acknowledged transactions that append"
    rows.append(("operations", f"{_count(s.ops, 'operation')} sent, {s.acked_writes} {changes}"
                               + (f" to {_count(s.keys, 'key')}" if s.keys else "") + f", {s.lost_writes} lost"))
    # A check's verdict is a reason too: "why" says only what the checks below do not.
    said = {f"{c.name}: {c.detail}" for c in s.checks}
    if reasons := [x for x in s.reasons if x not in said]:
        rows.append(("why", reasons))
    if s.checks:
        rows.append(("checks", [f"{c.name}: {c.verdict} - {c.detail}" for c in s.checks]))
    if s.counterexample:
        rows.append(("counterexample", counterexample_lines(s.counterexample)))
    if a := s.availability:
        gap = "-" if a.longest_gap_ms is None else f"{a.longest_gap_ms:g} ms from {a.longest_gap_from:%H:%M:%S.%f}"[:-3]
        rate = "-" if a.error_rate is None else f"{a.error_rate:.1%}"
        rows.append(("availability", f"longest gap without a successful operation {gap}; error rate {rate}"
                                     + (f"; {a.capped} not sent (concurrency cap)" if a.capped else "")))
        rows.append(("latency", [_phase_text("before the fault", a.before), _phase_text("during", a.during),
                                 _phase_text("after", a.after)]))
    if s.history:
        rows.append(("history", f"{s.history} ({s.history_bytes / 1024:.0f} KiB)"))
    return rows


def safety_panel(s: SafetyReport) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in safety_rows(s):
        grid.add_row(label, "\n".join(f"- {v}" for v in value) if isinstance(value, list) else value)
    border = {"ok": "green", "violated": "red"}.get(s.verdict, "yellow")
    return Panel(grid, title=f"data safety: {s.verdict}", border_style=border)


def detector_rows(r: ChaosReport) -> list[tuple[str, str]]:
    """Time to detect per detector, ours first: did *their* monitoring notice, and how much later than ours?"""
    return [(d.name,
             seconds_text(d.time_to_detect_s) if d.fired else f"did not fire: {d.detail}") for d in r.detectors]


def effect_text(effect: FaultEffect) -> str:
    """What the fault did while it was on, as its kind confirmed it (the bytes a power loss dropped, the offsets a
    corruption changed): every report format shows the same line."""
    seen = "; ".join(effect.evidence)
    return seen if effect.took_effect else f"none seen ({seen or 'no sign of it'})"


def report_view(r: ChaosReport) -> Group:
    """The diagnosis and the verdict. Each fact once: the reasons carry time to detect and restore and who
    diagnosed, so no row repeats them."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{r.workflow_id} / {r.run_id}")
    where = f"project {r.project}" + (f", host {r.host}" if r.host else "")
    did = r.effect.evidence if r.effect and r.effect.took_effect else []  # what a power loss dropped, and such
    grid.add_row("fault", "\n".join([f"{r.fault_text} of {r.subject} ({where}): {r.fault_state.value}", *did]))
    if r.load.windows:
        grid.add_row("load", load_text(r.load))
    if r.stopped:
        grid.add_row("stopped", Text(trip_reason(r.stopped), style="bold red"))
    if r.steps:
        grid.add_row("steps", "\n".join(f"{where}: {text}" for where, text in step_rows(r.steps)))
    if r.seed is not None:
        grid.add_row("seed", f"{r.seed} (`--seed {r.seed}` replays the random schedule)")
    if r.on_at_first_violation:
        grid.add_row("on at first violation", ", ".join(r.on_at_first_violation))
    if r.detectors:
        grid.add_row("detectors", "\n".join(f"{name}: {ttd}" for name, ttd in detector_rows(r)))
    grid.add_row("reasons", "\n".join(f"- {x}" for x in r.reasons))
    color = {"pass": "green", "inconclusive": "yellow"}.get(r.verdict, "red")
    verdict = Panel(grid, title=Text(f"verdict: {r.verdict.upper()}", style=f"bold {color}"), border_style=color)
    parts = [diagnosis_panel(r.diagnosis)] if r.diagnosis else []
    if r.safety:
        parts.append(safety_panel(r.safety))
    return Group(*parts, verdict)


def print_report(console: Console, r: ChaosReport, url: str) -> None:
    """The report, then the run's page in the web UI on a line of its own, unbroken so terminals can open it."""
    console.print(report_view(r))
    console.print(f"history: {url}", highlight=False, soft_wrap=True)
