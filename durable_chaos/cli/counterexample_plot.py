"""A counterexample drawn so it can be looked at, in the manner of Porcupine's visualizer (matplotlib, inline SVG).

Operations on a timeline: one row per process, each operation a bar from its invoke to its completion, colored by
outcome (an `info` one is hatched until the client gave up, then runs on to the end as a thin tail: it may take
effect any time after its invoke), the fault windows shaded, and the stuck operation marked (where no legal order
exists, or where the violation shows). The bars sit at their events' places in time order, evenly spaced, not to
scale: a counterexample often holds 2 ms reads seconds apart, which to scale would be slivers. The ticks give the
real times.

A transaction cycle is drawn as a cycle: the transactions around a circle, each dependency an arrow labelled with
its kind, and under it why each one holds, in words.
"""

from __future__ import annotations

import math
import textwrap
from bisect import bisect_left
from datetime import datetime, timedelta

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, Patch

from durable_chaos.cli.plots import FAULT, inline_svg
from durable_chaos.cli.render import op_words, stuck_words, txn_name
from durable_chaos.contracts import Counterexample, OpView

FaultWindows = list[tuple[datetime, datetime | None, str]]

OUTCOME_COLOURS = {"ok": "#4393c3", "fail": "#bababa", "info": "#f4a442"}
OUTCOME_LEGEND = {"ok": "ok", "fail": "fail (did not take effect)",
                  "info": "info (no answer: may take effect any time later, the thin tail)"}
STUCK = "#b2182b"
# A dependency's kind: its colour and what it means, for the legend.
EDGE_STYLES = {"ww": ("#762a83", "ww: overwrote its append"), "wr": ("#1b7837", "wr: read its append"),
               "rw": ("#b2182b", "rw: read before its append (anti-dependency)"),
               "rt": ("#737373", "rt: finished before it began (real time)")}
LABEL_CHARS = 46  # an operation's words on its bar, cut beyond this


def counterexample_svg(cx: Counterexample, faults: FaultWindows = ()) -> str:
    """The counterexample as an inline SVG: a transaction cycle as a cycle, anything else as a timeline."""
    return _cycle_svg(cx) if cx.cycle else _timeline_svg(cx, faults)


def _cut(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _timeline_svg(cx: Counterexample, faults: FaultWindows) -> str:
    ops = cx.ops
    events = {op.invoked_at for op in ops} | {_answered(op) for op in ops}
    first, last = min(events), max(events)
    faults = [w for w in faults if w[0] <= last and (w[1] is None or w[1] >= first)]  # while these ops ran
    # A fault's start and end that fall among the ops' events are events too: else a fault between two operations
    # would be drawn zero wide.
    moments = sorted(events | {t for w in faults for t in w[:2] if t is not None and first < t < last})

    def x(t: datetime) -> float:
        """A moment's place: its rank among the events, between two events if it falls between."""
        i = bisect_left(moments, t)
        return float(i) if i < len(moments) and moments[i] == t else i - 0.5

    left, right = -0.6, len(moments) - 0.4  # an info op's tail runs to the right edge
    processes = sorted({op.process for op in ops})
    row = {p: i for i, p in enumerate(processes)}
    with rc_context({"svg.fonttype": "path", "font.size": 9, "hatch.color": "#9a5b13"}):
        fig = Figure(figsize=(9.6, 1.7 + 0.9 * len(processes)), layout="constrained")
        ax = fig.subplots()
        ax.set_gid("counterexample-axes")
        for n, (start, end, label) in enumerate(faults, 1):
            # A fault that began before the first event (or ended after the last) runs off that edge.
            a = left if start < moments[0] else x(start)
            b = right if end is None or end > moments[-1] else x(end)
            ax.axvspan(a, b, color=FAULT, alpha=0.3, lw=0, gid=f"counterexample-fault-{n}")
            ax.text((a + b) / 2, len(processes) - 0.45, _cut(label, 40), ha="center", va="bottom", fontsize=8,
                    color="#8c2d04", fontweight="bold")
        above: dict[int, bool] = {}  # per row: where the last label went (consecutive ops alternate)
        for i, op in enumerate(ops):
            y = row[op.process]
            start = x(op.invoked_at)
            end = max(x(_answered(op)), start + 0.15)
            stuck = i == cx.stuck
            ax.barh(y, end - start, left=start, height=0.32, color=OUTCOME_COLOURS[op.outcome],
                    hatch="///" if op.outcome == "info" else None, edgecolor=STUCK if stuck else "#404040",
                    lw=2.2 if stuck else 0.6, gid=f"counterexample-op-{i}")
            if op.outcome == "info":  # the client gave up; the operation may still take effect, until the end
                ax.barh(y, right - end, left=end, height=0.08, color=OUTCOME_COLOURS["info"], alpha=0.6, lw=0,
                        gid=f"counterexample-op-{i}-later")
            above[y] = not above.get(y, False)
            ax.text(start, y - 0.22 if above[y] else y + 0.24, _cut(op_words(op)) + f" ({op.outcome})",
                    va="bottom" if above[y] else "top", ha="left", fontsize=8,
                    color=STUCK if stuck else "#222222", fontweight="bold" if stuck else "normal")
            if stuck:
                tip = end
                ax.plot(tip, y, marker="X", ms=13, color=STUCK, mec="white", gid="counterexample-stuck", zorder=5)
                ax.annotate(stuck_words(cx), (tip, y), xytext=(9, 0), textcoords="offset points",
                            va="center", ha="left", fontsize=8, color=STUCK, fontweight="bold")
        ax.set_xlim(left, right)
        ax.set_ylim(len(processes) - 0.3, -0.6)
        ax.set_yticks(range(len(processes)), [f"process {p}" for p in processes])
        # Real times at the events' places: seconds since the first invoke (thinned to at most 14 ticks).
        every = max(1, -(-len(moments) // 14))
        ticks = list(range(0, len(moments), every))
        ax.set_xticks(ticks, _tick_labels([(moments[i] - moments[0]).total_seconds() for i in ticks]), rotation=40,
                      ha="right", fontsize=8)
        ax.set_xlabel("seconds since the first invoke (events in time order, evenly spaced: not to scale)")
        ax.grid(axis="x", color="#e5e5e5", lw=0.8)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        handles = [Patch(facecolor=c, edgecolor="#404040", lw=0.6, hatch="///" if o == "info" else None,
                         label=OUTCOME_LEGEND[o]) for o, c in OUTCOME_COLOURS.items()
                   if any(op.outcome == o for op in ops)]
        if cx.stuck is not None:
            handles.append(Line2D([], [], marker="X", ms=10, color=STUCK, mec="white", ls="",
                                  label=f"stuck: {stuck_words(cx)}"))
        if faults:
            handles.append(Patch(color=FAULT, alpha=0.3, label="fault window"))
        fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 3), fontsize=8,
                   frameon=False)
        stuck_op = ops[cx.stuck] if cx.stuck is not None else None
        title = (f"Counterexample ({cx.checker}): {len(ops)} operations of {len(processes)} processes"
                 + (f"; stuck at {op_words(stuck_op)}: {stuck_words(cx)}" if stuck_op else "")
                 + (f"; fault: {', '.join(w[2] for w in faults)}" if faults else ""))
        return inline_svg(fig, "counterexample", title, fig.get_default_bbox_extra_artists())


def _answered(op: OpView) -> datetime:
    """When the client had its answer, or gave up waiting (an info op: it may take effect later still)."""
    return op.completed_at or op.invoked_at + timedelta(milliseconds=op.latency_ms)


def _tick_labels(seconds: list[float]) -> list[str]:
    """Milliseconds, or as many digits more as it takes to tell neighbouring events apart (up to microseconds)."""
    for digits in (3, 4, 5):
        labels = [f"{s:.{digits}f}" for s in seconds]
        if all(a != b for a, b in zip(labels, labels[1:])):
            return labels
    return [f"{s:.6f}" for s in seconds]


def _cycle_order(cx: Counterexample) -> list[int]:
    """The cycle's transactions in the order its edges go round (each edge's source before its target)."""
    order: list[int] = []
    for e in cx.cycle:
        for i in (e.source, e.target):
            if i not in order:
                order.append(i)
    return order


def _txn_line(i: int, op: OpView) -> str:
    return f"{txn_name(i)}  process {op.process}, {op.outcome}: {op_words(op).removeprefix('txn ')}"


def _cycle_svg(cx: Counterexample) -> str:
    order = _cycle_order(cx)
    n = len(order)
    # Round the circle clockwise from the top, T1 first.
    place = {i: (math.sin(2 * math.pi * k / n), math.cos(2 * math.pi * k / n)) for k, i in enumerate(order)}
    txns = [textwrap.fill(_txn_line(i, cx.ops[i]), 64, subsequent_indent="      ") for i in order]
    whys = [textwrap.fill(f"{txn_name(e.source)} → {txn_name(e.target)} ({e.kind}): {e.why}", 118,
                          subsequent_indent="      ") for e in cx.cycle]
    why_lines = sum(w.count("\n") + 1 for w in whys)
    with rc_context({"svg.fonttype": "path", "font.size": 9}):
        height = 3.8 + 0.19 * why_lines
        fig = Figure(figsize=(9.6, height))
        circle_h = 3.2 / height
        ax = fig.add_axes((0.0, 1 - circle_h, 3.4 / 9.6, circle_h))
        ax.set_gid("cycle-axes")
        ax.set_aspect("equal")
        ax.set_xlim(-1.45, 1.45)
        ax.set_ylim(-1.4, 1.4)
        ax.axis("off")
        for k, e in enumerate(cx.cycle):
            (x1, y1), (x2, y2) = place[e.source], place[e.target]
            colour = EDGE_STYLES.get(e.kind, ("#404040", e.kind))[0]
            rad = 0.25
            ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                         mutation_scale=16, lw=1.8, color=colour, shrinkA=17, shrinkB=17,
                                         ls="--" if e.kind == "rt" else "-", gid=f"cycle-edge-{k}"))
            # The quadratic curve's midpoint: the chord's middle pushed out by half the control point's offset.
            mx, my = (x1 + x2) / 2 + rad / 2 * (y2 - y1), (y1 + y2) / 2 - rad / 2 * (x2 - x1)
            ax.text(mx, my, e.kind, ha="center", va="center", fontsize=10, fontweight="bold", color=colour,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "lw": 0.8})
        for i, (px, py) in place.items():
            ax.add_patch(Circle((px, py), 0.2, fc="#fddbc7" if i == cx.stuck else "#deebf7", ec="#404040", lw=1,
                                gid=f"cycle-txn-{i}"))
            ax.text(px, py, txn_name(i), ha="center", va="center", fontsize=11, fontweight="bold")
        top = 1 - 0.25 / height
        fig.text(3.5 / 9.6, top, f"{cx.anomaly or 'A cycle'}: {n} transactions, each of which must come before "
                                 f"the next", fontsize=11, fontweight="bold", va="top")
        fig.text(3.5 / 9.6, top - 0.3 / height, "\n".join(txns), fontsize=9, va="top", family="DejaVu Sans Mono",
                 linespacing=1.5)
        txn_lines = sum(t.count("\n") + 1 for t in txns)
        kinds = sorted({e.kind for e in cx.cycle}, key=lambda k: list(EDGE_STYLES).index(k) if k in EDGE_STYLES else 9)
        fig.legend(handles=[Line2D([], [], color=EDGE_STYLES.get(k, ("#404040", k))[0], lw=1.8,
                                   ls="--" if k == "rt" else "-", label=EDGE_STYLES.get(k, ("", k))[1])
                            for k in kinds],
                   loc="upper left", bbox_to_anchor=(3.45 / 9.6, top - (0.45 + 0.21 * txn_lines) / height),
                   fontsize=8, frameon=False)
        fig.text(0.01, 1 - circle_h - 0.1 / height, "Why each must come before the next:", fontsize=9,
                 fontweight="bold", va="top")
        fig.text(0.01, 1 - circle_h - 0.32 / height, "\n".join(whys), fontsize=9, va="top", linespacing=1.5)
        title = (f"{cx.anomaly or 'A transaction cycle'}: "
                 + " → ".join(txn_name(i) for i in order + order[:1])
                 + "; " + "; ".join(f"{txn_name(e.source)} {e.kind} {txn_name(e.target)}" for e in cx.cycle))
        return inline_svg(fig, "counterexample-cycle", title, fig.get_default_bbox_extra_artists())
