"""Rich renderings of a run: the live progress view and the final report."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from contracts import ChaosReport, Diagnosis, FaultState, LoadSummary, LoadWindow, Progress, Stage

STAGES = [Stage.PREFLIGHT, Stage.COUNTDOWN, Stage.INJECT, Stage.DETECT, Stage.DIAGNOSE, Stage.RESTORE, Stage.VERIFY]


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


def countdown_seconds_left(p: Progress, now: datetime) -> int | None:
    """Whole seconds to the countdown's timer; runs older than the single timer report `countdown_left` only."""
    if p.countdown_ends_at is None:
        return p.countdown_left
    return max(0, math.ceil((p.countdown_ends_at - now).total_seconds()))


def progress_view(p: Progress, url: str) -> Panel:
    now = datetime.now(timezone.utc)
    stages = Text()
    for stage in STAGES:
        style = "bold reverse" if stage == p.stage else "dim"
        stages.append(f" {stage.value} ", style=style)
        stages.append(" ")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    elapsed = (now - p.started_at).total_seconds() if p.started_at else 0.0
    grid.add_row("stage", f"{p.stage.value}: {p.message}")
    grid.add_row("elapsed", f"{elapsed:.1f} s")
    grid.add_row("target", p.target or "(not chosen yet)")
    state_style = {FaultState.INJECTED: "bold red", FaultState.RESTORED: "green"}.get(p.fault_state, "")
    grid.add_row("fault", Text(p.fault_state.value, style=state_style))
    left = countdown_seconds_left(p, now)
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
    if p.diagnosis:
        grid.add_row("diagnosis", Text.assemble(f"{', '.join(p.diagnosis.affected_nodes) or 'nobody'} "
                                                f"({diagnosis_source(p.diagnosis)}) ", _grade(p.diagnosis)))
    grid.add_row("time to restore", seconds_text(p.time_to_restore_s))
    return Panel(Group(stages, grid), title=f"chaos run on {p.subject}", subtitle=url)


def diagnosis_source(d: Diagnosis) -> str:
    if d.source == "claude":
        return f"Claude ({d.model})" if d.model else "Claude"
    if d.fallback_reason:
        return f"rules engine (fallback: {d.fallback_reason}" + (f" - {d.fallback_detail})" if d.fallback_detail else ")")
    return "rules engine"


def _grade(d: Diagnosis) -> Text:
    if d.correct:
        return Text("✓ names the node that was hit, and only it", style="bold green")
    return Text("✗ does not match the node that was hit", style="bold red")


def diagnosis_panel(d: Diagnosis) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("source", diagnosis_source(d))
    grid.add_row("summary", d.summary)
    grid.add_row("root cause", d.root_cause)
    grid.add_row("affected", ", ".join(d.affected_nodes) or "-")
    if d.unknown_nodes:
        grid.add_row("dropped", Text(f"not members of the subject: {', '.join(d.unknown_nodes)}", style="yellow"))
    grid.add_row("evidence", "\n".join(f"- {e}" for e in d.evidence) or "-")
    grid.add_row("actions", "\n".join(f"- {a}" for a in d.suggested_actions) or "-")
    grid.add_row("confidence", f"{d.confidence:.0%}")
    if d.correct is not None:
        grid.add_row("correct", _grade(d))
    border = "default" if d.correct is None else ("green" if d.correct else "red")
    return Panel(grid, title=f"diagnosis by {'Claude' if d.source == 'claude' else 'the rules engine'}",
                 border_style=border)


def load_text(load: LoadSummary) -> str:
    """The run's load in one line: what the fault did to client traffic."""
    def ops(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    return (f"baseline {ops(load.baseline_ops_s)} ops/s, worst during fault {ops(load.worst_fault_ops_s)} ops/s, "
            f"{load.errors} errors in {len(load.windows)} windows")


def report_view(r: ChaosReport, url: str) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{r.workflow_id} / {r.run_id}")
    grid.add_row("subject", f"{r.subject} (project {r.project})")
    grid.add_row("fault", f"{r.fault} {r.target}")
    grid.add_row("fault state", r.fault_state.value)
    grid.add_row("time to detect", seconds_text(r.time_to_detect_s))
    grid.add_row("time to restore", seconds_text(r.time_to_restore_s))
    if r.load.windows:
        grid.add_row("load", load_text(r.load))
    grid.add_row("reasons", "\n".join(f"- {x}" for x in r.reasons))
    grid.add_row("history", Text(url, overflow="fold"))
    passed = r.verdict == "pass"
    verdict = Panel(grid, title=Text(f"verdict: {r.verdict.upper()}", style="bold green" if passed else "bold red"),
                    border_style="green" if passed else "red")
    parts = [diagnosis_panel(r.diagnosis)] if r.diagnosis else []
    return Group(*parts, verdict)
