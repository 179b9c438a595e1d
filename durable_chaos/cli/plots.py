"""Plots for the report page, drawn by matplotlib as inline SVG.

The SVG is self-contained (glyphs are drawn as paths: no font, image or script to fetch), so the page reads the
same offline and on any machine. Each plotted element carries an id (`gid`) so tests and scripts can find it.
"""

from __future__ import annotations

import html
import io
from datetime import datetime

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from durable_chaos.contracts import ChaosReport
from durable_chaos.safety.history import Op

OPS, ERRORS, FAULT = "#1f77b4", "#b2182b", "#f4a582"
# Per-operation latency: answered ones small and blue, the others drawn so they stand out.
OUTCOME_STYLES = {"ok": {"color": OPS, "marker": ".", "s": 6, "alpha": 0.5, "label": "ok"},
                  "info": {"color": "#e08214", "marker": "^", "s": 16, "label": "info (outcome unknown: timeout)"},
                  "fail": {"color": ERRORS, "marker": "x", "s": 16, "label": "fail (not applied)"}}
MARKER_COLOURS = {"inject": "#b2182b", "detect": "#e08214", "restore": "#1b7837"}
LABEL_GAP_PT = 3  # between labels that sit side by side, and between stacked rows


def _moments(r: ChaosReport) -> list[tuple[str, datetime, str]]:
    """The marked moments that happened, each with its label."""
    moments = []
    if r.injected_at:
        moments.append(("inject", r.injected_at, r.fault_text))
    if r.detected_at and r.time_to_detect_s is not None:
        moments.append(("detect", r.detected_at, f"detected +{r.time_to_detect_s:.2f} s"))
    if r.restored_at:
        ttr = f" (TTR {r.time_to_restore_s:.2f} s)" if r.time_to_restore_s is not None else ""
        moments.append(("restore", r.restored_at, f"healthy again{ttr}"))
    # The later faults of a run of steps: each marked where it went in (its shading shows how long it stayed).
    moments += [("inject", s.injected_at, f"step {s.step}: {s.fault_label} {', '.join(s.targets)}")
                for s in r.steps[1:] if s.injected_at]
    return moments


def _place_labels(fig: Figure, ax, marks: list[tuple[float, str, str]]) -> list:
    """Labels above the plot, each at its marker. A label that would touch another goes up a row (inject and
    detect are often well under a second apart); one near an edge is anchored inward so it is never cut off.
    Returns the labels: they stay out of the layout (which is final when they are measured), so the saved
    picture must be told to include them."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # runs the layout: the axes' place on the page is final from here
    left, right = ax.get_xlim()
    placed: list[tuple[int, object]] = []  # (row, bounding box)
    labels = []
    for x, text, colour in marks:
        where = (x - left) / (right - left)
        align = "left" if where < 0.1 else "right" if where > 0.9 else "center"
        for row in range(len(marks)):
            label = ax.annotate(text, xy=(x, 1), xycoords=("data", "axes fraction"),
                                xytext=(0, LABEL_GAP_PT + row * 13), textcoords="offset points", ha=align,
                                va="bottom", color=colour, fontsize=9, fontweight="bold", in_layout=False)
            box = label.get_window_extent(renderer).padded(LABEL_GAP_PT)
            if not any(r == row and box.overlaps(other) for r, other in placed):
                placed.append((row, box))
                labels.append(label)
                break
            label.remove()
    return labels


def timeline_svg(r: ChaosReport) -> str:
    """Throughput and errors per load window, the fault period shaded, inject / detect / restore marked."""
    windows = r.load.windows
    t0 = min([r.started_at] + [w.start for w in windows])

    def seconds(t: datetime) -> float:
        return (t - t0).total_seconds()

    # No path simplification: the throughput line keeps exactly one vertex per load window.
    with rc_context({"path.simplify": False, "svg.fonttype": "path", "font.size": 9}):
        fig = Figure(figsize=(9.6, 4.6), layout="constrained")
        ops_ax, err_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        ops_ax.set_gid("throughput-axes")
        err_ax.set_gid("errors-axes")
        end = seconds(max([r.finished_at] + [w.end for w in windows]))
        ops_ax.set_xlim(0, end)

        if (period := _fault_period(r)) is not None:
            span = tuple(seconds(t) for t in period)
            ops_ax.axvspan(*span, color=FAULT, alpha=0.25, lw=0, gid="fault-period")
            err_ax.axvspan(*span, color=FAULT, alpha=0.25, lw=0)
        for n, step in enumerate(r.steps[1:], 2):  # a run of steps: every later fault, inject to healthy again
            if step.injected_at:
                span = seconds(step.injected_at), seconds(step.restored_at or r.finished_at)
                ops_ax.axvspan(*span, color=FAULT, alpha=0.25, lw=0, gid=f"fault-period-{n}")
                err_ax.axvspan(*span, color=FAULT, alpha=0.25, lw=0)
        middles = [seconds(w.start + (w.end - w.start) / 2) for w in windows]
        ops_ax.plot(middles, [w.ops_per_s for w in windows], color=OPS, lw=2, marker="o", ms=3.5, gid="throughput",
                    label="ops/s per load window")
        bars = err_ax.bar(middles, [w.errors for w in windows],
                          width=[(w.end - w.start).total_seconds() * 0.8 for w in windows], color=ERRORS)
        for number, bar in enumerate(bars, 1):
            bar.set_gid(f"errors-window-{number}")

        marks = []
        for name, moment, text in _moments(r):
            colour = MARKER_COLOURS[name]
            ops_ax.axvline(seconds(moment), color=colour, lw=1.5, ls="--", gid=f"marker-{name}")
            err_ax.axvline(seconds(moment), color=colour, lw=1.5, ls="--")
            marks.append((seconds(moment), text, colour))

        ops_ax.set_ylim(0, max([w.ops_per_s for w in windows] + [1.0]) * 1.15)
        ops_ax.set_ylabel("ops/s per window")
        err_ax.set_ylim(0, max([w.errors for w in windows] + [1]) * 1.15)
        err_ax.set_ylabel("errors")
        err_ax.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
        err_ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 5, 10]))
        err_ax.xaxis.set_major_formatter("{x:g} s")
        err_ax.set_xlabel("time since the run started")
        for ax in (ops_ax, err_ax):
            ax.grid(axis="both", color="#e5e5e5", lw=0.8)
            ax.set_axisbelow(True)
            ax.spines[["top", "right"]].set_visible(False)
        # Inside the plot where it hides the least: a legend outside the axes collides with the x label in SVG.
        ops_ax.legend(handles=[ops_ax.lines[0], Patch(color=ERRORS, label="errors per window (lower panel)"),
                               Patch(color=FAULT, alpha=0.25, label="fault period: inject to healthy again")],
                      loc="best", fontsize=8, framealpha=0.9)
        labels = _place_labels(fig, ops_ax, sorted(marks))
        title = (f"Load during {r.fault} {r.target} on {r.subject}: ops/s and errors per load window, the fault "
                 f"period shaded, inject / detect / restore marked")
        return inline_svg(fig, "timeline", title, labels)


def inline_svg(fig: Figure, svg_id: str, title: str, extra_artists: list = ()) -> str:
    """The figure as an inline SVG element with an id and a title (the text a screen reader says)."""
    out = io.StringIO()
    # No metadata: matplotlib's would name its web site and a Dublin Core URL; the page links nothing.
    fig.savefig(out, format="svg", bbox_inches="tight", bbox_extra_artists=extra_artists, pad_inches=0.1,
                metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = out.getvalue()
    # Inline in HTML: drop the XML declaration and the DOCTYPE (it points at the W3C's DTD).
    svg = svg[svg.index("<svg"):]
    head, rest = svg.split(">", 1)
    head = head.replace("<svg ", f'<svg id="{svg_id}" role="img" style="max-width:100%;height:auto" ', 1)
    return f"{head}><title>{html.escape(title)}</title>{rest}"


def _fault_period(r: ChaosReport) -> tuple[datetime, datetime] | None:
    """From the fault until the subject was healthy again (or the run ended)."""
    return (r.injected_at, r.restored_at or r.finished_at) if r.injected_at else None


def fault_windows(r: ChaosReport) -> list[tuple[datetime, datetime | None, str]]:
    """Every fault the run injected, from inject to healthy again (None: never), with its label."""
    first = [(r.injected_at, r.restored_at, r.fault_text)] if r.injected_at else []
    return first + [(s.injected_at, s.restored_at, f"step {s.step}: {s.fault_label} {', '.join(s.targets)}")
                    for s in r.steps[1:] if s.injected_at]


def latency_svg(r: ChaosReport, ops: list[Op]) -> str:
    """Every operation of the load at its invoke time and latency (log scale), by outcome; the fault period
    shaded. Operations not sent (the concurrency cap) have no latency and are left out."""
    t0 = min([r.started_at.timestamp()] + [op.invoke_ns / 1e9 for op in ops])
    sent = [op for op in ops if not op.final and not op.capped]
    with rc_context({"path.simplify": False, "svg.fonttype": "path", "font.size": 9}):
        fig = Figure(figsize=(9.6, 3.6), layout="constrained")
        ax = fig.subplots()
        ax.set_gid("latency-axes")
        if (span := _fault_period(r)) is not None:
            ax.axvspan(*(t.timestamp() - t0 for t in span), color=FAULT, alpha=0.25, lw=0, gid="latency-fault-period",
                       label="fault period: inject to healthy again")
        for outcome, style in OUTCOME_STYLES.items():
            chosen = [op for op in sent if op.outcome == outcome]
            if chosen:
                ax.scatter([op.invoke_ns / 1e9 - t0 for op in chosen], [max(op.latency_ms, 0.01) for op in chosen],
                           gid=f"latency-{outcome}", linewidths=1, **style)
        # The timeline's time axis, so the two plots line up one above the other on the report page.
        ax.set_xlim(0, max([r.finished_at.timestamp() - t0] + [op.complete_ns / 1e9 - t0 for op in sent]))
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms), from when due")
        ax.set_xlabel("time since the run started")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 5, 10]))
        ax.xaxis.set_major_formatter("{x:g} s")
        ax.grid(axis="both", color="#e5e5e5", lw=0.8)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
        title = (f"Latency of each of the {len(sent)} operations during {r.fault_text} of {r.subject}, failed "
                 f"and unknown outcomes highlighted, the fault period shaded")
        return inline_svg(fig, "latency", title)
