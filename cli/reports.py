"""A finished run's report as files people and pipelines read: JSON, Markdown, self-contained HTML, JUnit XML.

Everything is drawn from the `ChaosReport` the workflow returned - above all the real load windows, which the HTML
timeline plots with the inject / detect / restore moments marked.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from datetime import datetime

from cli.render import diagnosis_source, load_text, seconds_text
from contracts import ChaosReport, Diagnosis

FORMATS = ("json", "md", "html", "junit")


def _title(r: ChaosReport) -> str:
    return f"{r.fault} {r.target or '(no target)'} on {r.subject}"


def _facts(r: ChaosReport) -> list[tuple[str, str]]:
    correct = None if r.diagnosis is None else r.diagnosis.correct
    return [
        ("verdict", r.verdict),
        ("run", f"{r.workflow_id} / {r.run_id}"),
        ("subject", f"{r.subject} (project {r.project})"),
        ("fault", f"{r.fault} {r.target or '-'}"),
        ("started", f"{r.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("duration", seconds_text((r.finished_at - r.started_at).total_seconds())),
        ("time to detect", seconds_text(r.time_to_detect_s)),
        ("time to restore", seconds_text(r.time_to_restore_s)),
        ("load", load_text(r.load)),
        ("diagnosis correct", "-" if correct is None else ("yes" if correct else "no")),
    ]


def _diagnosis_lines(d: Diagnosis) -> list[tuple[str, str | list[str]]]:
    return [
        ("source", diagnosis_source(d) + (f" - {d.fallback_detail}" if d.fallback_detail else "")),
        ("summary", d.summary),
        ("root cause", d.root_cause),
        ("affected", ", ".join(d.affected_nodes) or "-"),
        ("confidence", f"{d.confidence:.0%}"),
        ("evidence", d.evidence),
        ("suggested actions", d.suggested_actions),
    ]


# -- Markdown ---------------------------------------------------------------------------------------------------


def to_markdown(r: ChaosReport) -> str:
    out = [f"# Chaos run: {_title(r)} - {r.verdict.upper()}", "", "| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in _facts(r)]
    out += ["", "## Reasons", ""] + [f"- {x}" for x in r.reasons]
    if r.diagnosis:
        out += ["", "## Diagnosis", ""]
        for key, value in _diagnosis_lines(r.diagnosis):
            if isinstance(value, list):
                out += [f"- **{key}:**"] + [f"  - {v}" for v in value]
            else:
                out.append(f"- **{key}:** {value}")
    return "\n".join(out) + "\n"


# -- HTML with an inline SVG timeline ----------------------------------------------------------------------------

PLOT_W, PLOT_H, PAD_L, PAD_R, PAD_T, PAD_B = 900, 300, 50, 20, 30, 40
MARKERS = (("inject", "injected_at", "#d62728"), ("detect", "detected_at", "#ff7f0e"),
           ("restore", "restored_at", "#2ca02c"))


def _ticks(top: float, count: int = 4) -> list[float]:
    return [top * i / count for i in range(count + 1)]


def timeline_svg(r: ChaosReport) -> str:
    """Throughput (line) and errors (bars) per load window, the fault period shaded, the key moments marked."""
    windows = r.load.windows
    t0 = min([r.started_at] + [w.start for w in windows])
    t1 = max([r.finished_at] + [w.end for w in windows])
    span = max((t1 - t0).total_seconds(), 1e-3)
    inner_w, inner_h = PLOT_W - PAD_L - PAD_R, PLOT_H - PAD_T - PAD_B
    top_ops = max([w.ops_per_s for w in windows] + [1.0]) * 1.1
    top_err = max([w.errors for w in windows] + [1])

    def x(t: datetime) -> float:
        return PAD_L + inner_w * (t - t0).total_seconds() / span

    def y(value: float, top: float) -> float:
        return PAD_T + inner_h * (1 - value / top)

    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PLOT_W} {PLOT_H}" '
             f'width="{PLOT_W}" height="{PLOT_H}" role="img" font-family="sans-serif" font-size="11">',
             f"<title>Load during {html.escape(_title(r))}: ops/s and errors per window</title>"]
    if r.injected_at:  # the fault period: from the kill until the subject was healthy again (or the run ended)
        end = r.restored_at or r.finished_at
        parts.append(f'<rect class="fault-period" x="{x(r.injected_at):.1f}" y="{PAD_T}" '
                     f'width="{max(x(end) - x(r.injected_at), 1):.1f}" height="{inner_h}" fill="#d62728" '
                     f'fill-opacity="0.08"/>')
    for value in _ticks(top_ops):  # left axis: ops/s
        parts.append(f'<line x1="{PAD_L}" x2="{PLOT_W - PAD_R}" y1="{y(value, top_ops):.1f}" '
                     f'y2="{y(value, top_ops):.1f}" stroke="#eee"/>'
                     f'<text x="{PAD_L - 6}" y="{y(value, top_ops) + 4:.1f}" text-anchor="end">{value:.0f}</text>')
    for value in _ticks(span, 6):  # bottom axis: seconds since start
        px = PAD_L + inner_w * value / span
        parts.append(f'<text x="{px:.1f}" y="{PLOT_H - PAD_B + 16}" text-anchor="middle">{value:.0f}s</text>')
    parts.append(f'<text x="{PAD_L}" y="{PAD_T - 12}" fill="#1f77b4">line: ops/s</text>'
                 f'<text x="{PLOT_W - PAD_R}" y="{PAD_T - 12}" text-anchor="end" fill="#d62728">'
                 f"bars: errors per window (full height = {top_err})</text>")
    for w in windows:
        if w.errors:
            parts.append(f'<rect class="errors" x="{x(w.start):.1f}" y="{y(w.errors, top_err):.1f}" '
                         f'width="{max(x(w.end) - x(w.start) - 1, 1):.1f}" '
                         f'height="{PAD_T + inner_h - y(w.errors, top_err):.1f}" fill="#d62728" fill-opacity="0.3">'
                         f"<title>{w.errors} errors</title></rect>")
    points = " ".join(f"{x(w.end):.1f},{y(w.ops_per_s, top_ops):.1f}" for w in windows)
    parts.append(f'<polyline class="throughput" points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for row, (name, field, colour) in enumerate(MARKERS):
        moment = getattr(r, field)
        if moment is not None:  # labels on separate rows: inject and detect are often under a second apart
            parts.append(f'<line class="marker {name}" x1="{x(moment):.1f}" x2="{x(moment):.1f}" y1="{PAD_T}" '
                         f'y2="{PAD_T + inner_h}" stroke="{colour}" stroke-width="2" stroke-dasharray="4 3"/>'
                         f'<text class="marker-label" x="{x(moment) + 3:.1f}" y="{PAD_T + 10 + 12 * row}" '
                         f'fill="{colour}">{name} {moment:%H:%M:%S}</text>')
    parts.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#999"/>')
    parts.append("</svg>")
    return "\n".join(parts)


STYLE = """body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;vertical-align:top}
.pass{color:#2ca02c}.fail{color:#d62728}"""


def to_html(r: ChaosReport) -> str:
    """One self-contained page: no external scripts, styles or images."""
    e = html.escape
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(r))
    reasons = "".join(f"<li>{e(x)}</li>" for x in r.reasons)
    diagnosis = ""
    if r.diagnosis:
        rows = "".join(
            f"<tr><th>{e(k)}</th><td>"
            + (("<ul>" + "".join(f"<li>{e(i)}</li>" for i in v) + "</ul>") if isinstance(v, list) else e(v))
            + "</td></tr>"
            for k, v in _diagnosis_lines(r.diagnosis)
        )
        diagnosis = f'<section id="diagnosis"><h2>Diagnosis</h2><table>{rows}</table></section>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Chaos run {e(r.workflow_id)}: {e(r.verdict)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{e(_title(r))}: <span id="verdict" class="{e(r.verdict)}">{e(r.verdict.upper())}</span></h1>
<table id="facts">{facts}</table>
<h2>Timeline</h2>
{timeline_svg(r)}
<h2>Reasons</h2><ul id="reasons">{reasons}</ul>
{diagnosis}
</body></html>
"""


# -- JUnit XML ------------------------------------------------------------------------------------------------------


def to_junit(r: ChaosReport) -> str:
    """One testsuite with one testcase per run, so a CI pipeline can gate on the verdict."""
    failed = r.verdict == "fail"
    duration = f"{(r.finished_at - r.started_at).total_seconds():.3f}"
    suites = ET.Element("testsuites", name="durable-chaos", tests="1", failures=str(int(failed)), errors="0",
                        time=duration)
    suite = ET.SubElement(suites, "testsuite", name=f"chaos.{r.subject}", tests="1", failures=str(int(failed)),
                          errors="0", skipped="0", time=duration, timestamp=r.started_at.strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for name, value in [("workflow_id", r.workflow_id), ("run_id", r.run_id), ("project", r.project),
                        ("target", r.target), ("time_to_detect_s", r.time_to_detect_s),
                        ("time_to_restore_s", r.time_to_restore_s),
                        ("diagnosis_correct", None if r.diagnosis is None else r.diagnosis.correct)]:
        if value is not None:
            ET.SubElement(props, "property", name=name, value=str(value))
    case = ET.SubElement(suite, "testcase", classname=f"chaos.{r.subject}", name=_title(r), time=duration)
    if failed:
        failure = ET.SubElement(case, "failure", message="; ".join(r.reasons), type="ChaosVerdictFail")
        failure.text = "\n".join(r.reasons)
    ET.SubElement(case, "system-out").text = "\n".join(r.reasons)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def render(r: ChaosReport, fmt: str) -> str:
    if fmt == "json":
        return r.model_dump_json(indent=2) + "\n"
    return {"md": to_markdown, "html": to_html, "junit": to_junit}[fmt](r)
