"""A finished run's report as files people and pipelines read: JSON, Markdown, self-contained HTML, JUnit XML.

Everything is drawn from the `ChaosReport` the workflow returned - above all the real load windows, which the HTML
timeline plots (`cli/plots.py`) with the inject / detect / restore moments marked.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from durable_chaos.cli.render import (
    detector_rows,
    diagnosis_source,
    effect_text,
    load_text,
    safety_rows,
    seconds_text,
    step_rows,
)
from durable_chaos.contracts import ChaosReport, Diagnosis, SafetyReport
from durable_chaos.safety.history import Op, read_history
from durable_chaos.wording import trip_reason

FORMATS = ("json", "md", "html", "junit")


def _title(r: ChaosReport) -> str:
    more = len(r.steps) - 1
    return f"{r.fault_text} of {r.subject}" + (f", then {more} more fault{'s' if more > 1 else ''}" if more > 0 else "")


def _facts(r: ChaosReport) -> list[tuple[str, str]]:
    correct = None if r.diagnosis is None else r.diagnosis.correct
    return [
        ("verdict", r.verdict),
        ("run", f"{r.workflow_id} / {r.run_id}"),
        ("subject", f"{r.subject} (project {r.project}" + (f", host {r.host})" if r.host else ")")),
        ("fault", r.fault_text),
    ] + ([("its effect", effect_text(r.effect))] if r.effect else []) + [
        ("started", f"{r.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("duration", seconds_text((r.finished_at - r.started_at).total_seconds())),
        ("time to detect", seconds_text(r.time_to_detect_s)),
        ("time to restore", seconds_text(r.time_to_restore_s)),
        ("load", load_text(r.load)),
        ("diagnosis correct", "-" if correct is None else ("yes" if correct else "no")),
        ("data safety", r.safety.verdict if r.safety else "-"),
    ] + ([("stopped", trip_reason(r.stopped))] if r.stopped else []) + (
        [("random schedule seed", str(r.seed))] if r.seed is not None else []) + (
        [("on at the first violation", ", ".join(r.on_at_first_violation))] if r.on_at_first_violation else [])


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
    if r.steps:
        out += ["", "## Steps", "", "| step | fault |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in step_rows(r.steps)]
    out += ["", "## Reasons", ""] + [f"- {x}" for x in r.reasons]
    if r.diagnosis:
        out += ["", "## Diagnosis", ""] + _markdown_rows(_diagnosis_lines(r.diagnosis))
    if r.detectors:
        out += ["", "## Detection", "", "| detector | time to detect |", "| --- | --- |"]
        out += [f"| {name} | {ttd} |" for name, ttd in detector_rows(r)]
    if r.safety:
        out += ["", "## Data safety", ""] + _markdown_rows(safety_rows(r.safety))
    return "\n".join(out) + "\n"


def _markdown_rows(rows: list[tuple[str, str | list[str]]]) -> list[str]:
    out = []
    for key, value in rows:
        if isinstance(value, list):
            out += [f"- **{key}:**"] + [f"  - {v}" for v in value]
        else:
            out.append(f"- **{key}:** {value}")
    return out


# -- HTML with the timeline plot inline ---------------------------------------------------------------------------

STYLE = """body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;vertical-align:top}
.pass,.ok{color:#2ca02c}.fail,.violated{color:#d62728}.unknown{color:#b8860b}"""


def to_html(r: ChaosReport) -> str:
    """One self-contained page: no external scripts, styles or images."""
    # Imported here: matplotlib takes a second to load, which every other starter command would pay for.
    from durable_chaos.cli.counterexample_plot import counterexample_svg
    from durable_chaos.cli.plots import fault_windows, latency_svg, timeline_svg

    e = html.escape
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(r))
    reasons = "".join(f"<li>{e(x)}</li>" for x in r.reasons)
    diagnosis = ""
    if r.diagnosis:
        diagnosis = f'<section id="diagnosis"><h2>Diagnosis</h2>{_html_rows(_diagnosis_lines(r.diagnosis))}</section>'
    steps = ""
    if r.steps:
        steps = f'<section id="steps"><h2>Steps</h2>{_html_rows(step_rows(r.steps))}</section>'
    detection = ""
    if r.detectors:
        detection = f'<section id="detection"><h2>Detection</h2>{_html_rows(detector_rows(r))}</section>'
    safety = ""
    if r.safety:
        ops = _history(r)
        plot = latency_svg(r, ops) if ops else (
            f"<p>No latency plot: the operation history ({e(r.safety.history or 'none')}) is not on this machine.</p>")
        if r.safety.counterexample:
            plot += _counterexample_figure(counterexample_svg(r.safety.counterexample, fault_windows(r)))
        safety = (f'<section id="safety"><h2>Data safety: <span class="{e(r.safety.verdict)}">'
                  f'{e(r.safety.verdict)}</span></h2>{_html_rows(safety_rows(r.safety))}{plot}</section>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Chaos run {e(r.workflow_id)}: {e(r.verdict)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{e(_title(r))}: <span id="verdict" class="{e(r.verdict)}">{e(r.verdict.upper())}</span></h1>
<table id="facts">{facts}</table>
<h2>Timeline</h2>
{timeline_svg(r)}
{steps}
<h2>Reasons</h2><ul id="reasons">{reasons}</ul>
{detection}
{diagnosis}
{safety}
</body></html>
"""


def _counterexample_figure(svg: str) -> str:
    return f'<h3>Counterexample</h3><figure id="counterexample-figure">{svg}</figure>'


def check_html(name: str, s: SafetyReport, faults: list[tuple[datetime, datetime | None, str]],
               notes: list[str] = ()) -> str:
    """`starter.py check --html`: one self-contained page with the verdict, the checks and the counterexample
    drawn (fault windows from the history's nemesis lines)."""
    from durable_chaos.cli.counterexample_plot import counterexample_svg  # matplotlib: a second to load

    e = html.escape
    figure = _counterexample_figure(counterexample_svg(s.counterexample, faults)) if s.counterexample else ""
    short = Path(name).name or name  # the whole path is in the table's "history" row
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>History check of {e(short)}: {e(s.verdict)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{e(short)} as a {e(s.model or "history")}: <span id="verdict" class="{e(s.verdict)}">{e(s.verdict)}</span></h1>
{"".join(f'<p class="note">{e(n)}</p>' for n in notes)}
<section id="safety">{_html_rows(safety_rows(s))}{figure}</section>
</body></html>
"""


def _html_rows(rows: list[tuple[str, str | list[str]]]) -> str:
    e = html.escape
    return "<table>" + "".join(
        f"<tr><th>{e(k)}</th><td>"
        + (("<ul>" + "".join(f"<li>{e(i)}</li>" for i in v) + "</ul>") if isinstance(v, list) else e(v))
        + "</td></tr>"
        for k, v in rows
    ) + "</table>"


def _history(r: ChaosReport) -> list[Op] | None:
    """The run's operations, when its history is on this machine (it is on the disk of the worker that ran it)."""
    folder = Path(r.safety.history) if r.safety and r.safety.history else None
    if folder is None or not folder.is_dir():
        return None
    return read_history(folder).ops or None


# -- JUnit XML ------------------------------------------------------------------------------------------------------


def to_junit(r: ChaosReport) -> str:
    """One testsuite with one testcase per run, so a CI pipeline can gate on the verdict."""
    # Inconclusive (a fault did nothing) is no failure of the system, and no pass either: CI shows it skipped.
    failed, skipped = r.verdict == "fail", r.verdict == "inconclusive"
    duration = f"{(r.finished_at - r.started_at).total_seconds():.3f}"
    suites = ET.Element("testsuites", name="durable-chaos", tests="1", failures=str(int(failed)), errors="0",
                        time=duration)
    suite = ET.SubElement(suites, "testsuite", name=f"chaos.{r.subject}", tests="1", failures=str(int(failed)),
                          errors="0", skipped=str(int(skipped)), time=duration,
                          timestamp=r.started_at.strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for name, value in [("workflow_id", r.workflow_id), ("run_id", r.run_id), ("project", r.project),
                        ("host", r.host),
                        ("target", r.target), ("targets", ",".join(r.targets) or r.target),
                        ("fault", r.fault_label or r.fault),
                        ("effect", effect_text(r.effect) if r.effect else None),
                        ("time_to_detect_s", r.time_to_detect_s),
                        ("time_to_restore_s", r.time_to_restore_s),
                        ("diagnosis_correct", None if r.diagnosis is None else r.diagnosis.correct),
                        ("safety_verdict", r.safety.verdict if r.safety else None),
                        ("lost_writes", r.safety.lost_writes if r.safety else None),
                        ("stopped", trip_reason(r.stopped) if r.stopped else None),
                        ("seed", r.seed),
                        *((f"step[{i}]", f"{where}: {text}") for i, (where, text) in enumerate(step_rows(r.steps), 1)),
                        *((f"time_to_detect_s[{d.name}]", d.time_to_detect_s if d.fired else "never")
                          for d in r.detectors)]:
        if value is not None:
            ET.SubElement(props, "property", name=name, value=str(value))
    case = ET.SubElement(suite, "testcase", classname=f"chaos.{r.subject}", name=_title(r), time=duration)
    if failed:
        # CI can tell lost data from a slow detection by the type.
        kind = ("DataSafetyViolated" if r.safety and r.safety.verdict == "violated"
                else "StopConditionTripped" if r.stopped else "ChaosVerdictFail")
        failure = ET.SubElement(case, "failure", message="; ".join(r.reasons), type=kind)
        failure.text = "\n".join(r.reasons)
    if skipped:
        ET.SubElement(case, "skipped", message="inconclusive: " + "; ".join(r.failed_because))
    ET.SubElement(case, "system-out").text = "\n".join(r.reasons)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def render(r: ChaosReport, fmt: str) -> str:
    if fmt == "json":
        return r.model_dump_json(indent=2) + "\n"
    return {"md": to_markdown, "html": to_html, "junit": to_junit}[fmt](r)
