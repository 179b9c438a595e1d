"""A campaign's report as files: JSON, Markdown, a self-contained HTML page (one row per cell, each linked to its run
in the web UI, regressions highlighted) and JUnit XML (one testcase per cell). Drawn from the `CampaignReport` the
workflow returned; the per-run helpers (seconds, style) are the run report's own (cli/render.py, cli/reports.py)."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from typing import Callable

from durable_chaos.cli.render import seconds_text
from durable_chaos.cli.reports import STYLE
from durable_chaos.contracts.campaign import CampaignReport, CellResult

# A cell's run in the web UI: (workflow id, run id) -> URL. The CLI builds it from the server it talks to.
UrlFor = Callable[[str, str], str]


def diagnosis_text(c: CellResult) -> str:
    return "-" if c.diagnosis_correct is None else ("correct" if c.diagnosis_correct else "wrong")


def cell_row(c: CellResult) -> list[str]:
    """A cell's figures as every rendering shows them: state, TTD, TTR, safety, diagnosis."""
    return [c.state, seconds_text(c.time_to_detect_s), seconds_text(c.time_to_restore_s), c.safety or "-",
            diagnosis_text(c)]


COLUMNS = ["cell", "verdict", "time to detect", "time to restore", "data safety", "diagnosis"]


def _headline(r: CampaignReport) -> str:
    passed = sum(c.state == "pass" for c in r.cells)
    return (f"campaign {r.campaign}: {r.verdict.upper()} - {passed}/{len(r.cells)} cells passed, "
            f"{len(r.scorecard.regressions)} regressions")


def _scorecard_lines(r: CampaignReport) -> list[str]:
    s = r.scorecard
    if s.unavailable:
        return [f"no comparison: {s.unavailable}"]
    if s.previous_run_id is None:
        return ["first run of this campaign: nothing to compare with"]
    lines = [f"compared with run {s.previous_run_id}"
             + (f" of {s.previous_started_at:%Y-%m-%d %H:%M} UTC" if s.previous_started_at else "")]
    lines += [f"regressed: {c.key}: {c.detail}" for c in s.regressions] or ["no cell regressed"]
    lines += [f"new cell: {k}" for k in s.new_cells] + [f"removed cell: {k}" for k in s.removed_cells]
    return lines


# -- Markdown --------------------------------------------------------------------------------------------------------


def to_markdown(r: CampaignReport) -> str:
    out = [f"# {_headline(r)}", "", "| " + " | ".join(COLUMNS) + " | run |", "|" + " --- |" * (len(COLUMNS) + 1)]
    for c in r.cells:
        flag = " (regressed)" if r.scorecard.regressed(c.key) else ""
        out.append(f"| {c.key}{flag} | " + " | ".join(cell_row(c)) + f" | {c.workflow_id or '-'} {c.run_id or ''} |")
    out += ["", "## Scorecard", ""] + [f"- {line}" for line in _scorecard_lines(r)]
    return "\n".join(out) + "\n"


# -- HTML ------------------------------------------------------------------------------------------------------------

CAMPAIGN_STYLE = STYLE + """
body{max-width:1240px}table#cells{margin:1em 0;width:100%}#cells th{border-bottom:2px solid #ccc;white-space:nowrap}
#cells td{border-bottom:1px solid #eee;padding:6px 10px}tr.regressed{background:#fde8e8}
.regression{color:#d62728;font-size:90%}.error,.cancelled{color:#b8860b}.running,.pending{color:#777}
.num{text-align:right;font-variant-numeric:tabular-nums}"""


def to_html(r: CampaignReport, url_for: UrlFor) -> str:
    """One self-contained page: no external scripts, styles or images."""
    e = html.escape
    rows = []
    for c in r.cells:
        changes = r.scorecard.regressed(c.key)
        state, ttd, ttr, safety, diagnosis = cell_row(c)
        link = (f'<a href="{e(url_for(c.workflow_id, c.run_id))}">{e(c.key)}</a>' if c.workflow_id and c.run_id
                else e(c.key))
        notes = "".join(f'<div class="regression">regressed: {e(x.detail)}</div>' for x in changes)
        # A verdict regression already quotes the reason: not twice.
        quoted = any(x.kind == "verdict" for x in changes)
        why = "" if c.state == "pass" or not c.reasons or quoted else f'<div class="why">{e(c.reasons[0])}</div>'
        rows.append(f'<tr class="{"regressed" if changes else ""}"><td>{link}{notes}{why}</td>'
                    f'<td class="{e(state)}"><b>{e(state)}</b></td><td class="num">{e(ttd)}</td>'
                    f'<td class="num">{e(ttr)}</td><td class="{e(safety)}">{e(safety)}</td>'
                    f'<td>{e(diagnosis)}</td></tr>')
    head = "".join(f"<th>{e(h)}</th>" for h in COLUMNS)
    card = "".join(f"<li>{e(line)}</li>" for line in _scorecard_lines(r))
    took = seconds_text((r.finished_at - r.started_at).total_seconds())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Campaign {e(r.campaign)}: {e(r.verdict)}</title>
<style>{CAMPAIGN_STYLE}</style></head>
<body>
<h1>Campaign {e(r.campaign)}: <span id="verdict" class="{e(r.verdict)}">{e(r.verdict.upper())}</span></h1>
<p>{sum(c.state == "pass" for c in r.cells)} of {len(r.cells)} cells passed; run {e(r.workflow_id)} / {e(r.run_id)},
started {r.started_at:%Y-%m-%d %H:%M:%S} UTC, took {e(took)}, {r.parallelism} cells at once at most.</p>
<table id="cells"><tr>{head}</tr>{"".join(rows)}</table>
<h2>Scorecard</h2><ul id="scorecard">{card}</ul>
</body></html>
"""


# -- JUnit XML -------------------------------------------------------------------------------------------------------


def to_junit(r: CampaignReport) -> str:
    """One testsuite, one testcase per cell: a failure for a failed verdict, an error for a run that did not end
    with one (cancelled, subject busy, failed); regressions are in each case's output."""
    failures = sum(c.state == "fail" for c in r.cells)
    errors = sum(c.state in ("error", "cancelled", "pending", "running") for c in r.cells)
    took = f"{(r.finished_at - r.started_at).total_seconds():.3f}"
    counts = dict(tests=str(len(r.cells)), failures=str(failures), errors=str(errors))
    suites = ET.Element("testsuites", name="durable-chaos", time=took, **counts)
    suite = ET.SubElement(suites, "testsuite", name=f"campaign.{r.campaign}", skipped="0", time=took,
                          timestamp=r.started_at.strftime("%Y-%m-%dT%H:%M:%S"), **counts)
    props = ET.SubElement(suite, "properties")
    for name, value in [("workflow_id", r.workflow_id), ("run_id", r.run_id),
                        ("previous_run_id", r.scorecard.previous_run_id),
                        ("regressions", len(r.scorecard.regressions))]:
        if value is not None:
            ET.SubElement(props, "property", name=name, value=str(value))
    for c in r.cells:
        case = ET.SubElement(suite, "testcase", classname=f"campaign.{r.campaign}.{c.subject}", name=c.key,
                             time=f"{c.seconds or 0:.3f}")
        if c.state == "fail":
            ET.SubElement(case, "failure", message="; ".join(c.reasons), type="ChaosVerdictFail").text = \
                "\n".join(c.reasons)
        elif c.state != "pass":
            ET.SubElement(case, "error", message="; ".join(c.reasons) or c.state, type=f"Cell{c.state.title()}")
        out = [f"run {c.workflow_id} / {c.run_id}", "verdict, TTD, TTR, safety, diagnosis: " + ", ".join(cell_row(c))]
        out += [f"regressed: {x.detail}" for x in r.scorecard.regressed(c.key)] + c.reasons
        ET.SubElement(case, "system-out").text = "\n".join(out)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def render(r: CampaignReport, fmt: str, url_for: UrlFor) -> str:
    if fmt == "json":
        return r.model_dump_json(indent=2) + "\n"
    if fmt == "html":
        return to_html(r, url_for)
    return {"md": to_markdown, "junit": to_junit}[fmt](r)
