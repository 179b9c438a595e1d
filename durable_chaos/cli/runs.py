"""Finding runs and reading them: `starter.py list`, `status ID`, `watch ID`, `report ID`.

Everything comes from Temporal itself: the list from visibility (the Chaos* search attributes), a closed run's
report from its workflow result, a running run's state from its `progress` query.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle

from durable_chaos.cli.campaigns import campaign_report, is_campaign
from durable_chaos.cli.common import (
    EXIT_FOR_VERDICT,
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_INFRA,
    EXIT_PASS,
    connect_client,
    err_console,
    exit_code_for_failure,
    fail,
    live_progress,
    load_subject,
    lookup_run,
    no_worker_hint,
    run_url,
    running_run,
    say_cancelled,
)
from durable_chaos.cli.facts import run_facts
from durable_chaos.cli.follow import follow_to_end
from durable_chaos.cli.guards import guard_lines, guard_states
from durable_chaos.cli.render import facts_view, print_report, progress_view
from durable_chaos.cli.retries import retrying
from durable_chaos.cli.reports import FORMATS, render
from durable_chaos.contracts import WORKFLOW_NAME, Attr, ChaosReport, Progress, final_report

VERDICTS = ("pass", "fail", "inconclusive")
VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}


def runs_query(subject: str | None, verdict: str | None) -> str:
    """The visibility query behind `list`; the same text works in the web UI and `temporal workflow list`."""
    clauses = [f'WorkflowType="{WORKFLOW_NAME}"']
    if subject:
        clauses.append(f'{Attr.SUBJECT.name}="{subject}"')
    if verdict:
        clauses.append(f'{Attr.VERDICT.name}="{verdict}"')
    return " AND ".join(clauses)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


async def _list(subject: str | None, verdict: str | None, limit: int, as_json: bool) -> None:
    client = await connect_client()
    facts, rows = [], []
    async for wf in client.list_workflows(runs_query(subject, verdict), limit=limit):
        f = await run_facts(wf)
        facts.append(f)
        rows.append({**asdict(f), "started_at": f.started_at.isoformat()})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    # Borderless and compact so that a 120-column terminal shows every column; the run id is never cut, since
    # `report --run-id` takes it.
    table = Table(title=f"chaos runs ({runs_query(subject, verdict)})", title_justify="left", box=None,
                  header_style="bold", pad_edge=False, collapse_padding=True)
    for column in ("started UTC", "workflow id", "run id", "state", "subject", "fault", "verdict", "TTD s",
                   "TTR s", "diagnosis"):
        table.add_column(column, no_wrap=True, min_width=36 if column == "run id" else None)
    for f, row in zip(facts, rows):
        verdict_text = Text(row["verdict"] or "-", style=VERDICT_STYLE.get(row["verdict"], ""))
        correct = {True: Text("correct", style="green"), False: Text("wrong", style="red")}.get(
            row["diagnosis_correct"], Text("-"))
        state = (f"running ({row['stage'] or 'not started'})" if row["status"] == "RUNNING"
                 else (row["status"] or "-").lower())
        table.add_row(row["started_at"][5:16].replace("T", " "), row["workflow_id"], row["run_id"], state,
                      row["subject"] or "-", f.fault_on, verdict_text, _seconds(row["time_to_detect_s"]),
                      _seconds(row["time_to_restore_s"]), correct)
    Console().print(table)
    if not rows:
        Console(stderr=True).print("no runs match")


def list_runs(
    subject: Optional[str] = typer.Option(None, help="Only runs on this subject."),
    verdict: Optional[str] = typer.Option(None, help="Only runs with this verdict: pass, fail or inconclusive."),
    limit: int = typer.Option(20, help="At most this many runs, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Recent chaos runs (manual and scheduled) with target, verdict, time to detect/restore and diagnosis."""
    if subject is not None:
        subject = load_subject(subject).name
    if verdict is not None and verdict not in VERDICTS:
        fail(EXIT_BAD_INPUT, f"--verdict must be pass or fail (got {verdict!r})")
    if limit < 1:
        fail(EXIT_BAD_INPUT, f"--limit must be at least 1 (got {limit})")
    asyncio.run(_list(subject, verdict, limit, as_json))


# -- one run ------------------------------------------------------------------------------------------------------


async def _final_report(handle: WorkflowHandle) -> ChaosReport:
    """The workflow result of a closed run; a run that ended without one exits with the reason."""
    try:
        return await final_report(handle, follow_runs=False)
    except WorkflowFailureError as err:
        code, message = exit_code_for_failure(err)
        fail(code if code != EXIT_PASS else EXIT_FAIL, f"run {handle.id} has no report: {message}")


async def _status(workflow_id: str, run_id: str | None) -> int:
    client = await connect_client()
    handle, desc = await lookup_run(client, workflow_id, run_id)
    url = run_url(client, handle.id, handle.run_id or "")
    console = Console()
    if desc.status == WorkflowExecutionStatus.RUNNING:
        progress = await live_progress(client, handle, desc)
        retries = retrying(desc.raw_description.pending_activities)
        if progress is not None:
            console.print(progress_view(progress, url, retries))
        else:  # what the server knows, at once, rather than a query that waits for a worker that is not there
            console.print(facts_view(await run_facts(desc), await desc.static_summary(), url, retries))
            err_console.print(no_worker_hint(handle.id), style="yellow", highlight=False, soft_wrap=True)
        return EXIT_PASS
    if desc.status == WorkflowExecutionStatus.CANCELED:
        return await say_cancelled(handle)
    if desc.status != WorkflowExecutionStatus.COMPLETED:  # no report: say what became of the faults it left
        if guards := await guard_states(client, handle.id, desc.run_id):
            console.print(Text(guard_lines(guards)), soft_wrap=True)
    report = await _final_report(handle)
    print_report(console, report, url)
    return EXIT_FOR_VERDICT[report.verdict]


def status(
    workflow_id: str = typer.Argument(..., help="Workflow id of the run (e.g. chaos-etcd); its latest run."),
    run_id: Optional[str] = typer.Option(None, help="A specific run of that workflow id."),
) -> None:
    """Where a run is now (live stage, load, detection clock) or, once closed, its verdict.

    With no worker serving a running run, what the server knows of it (and how to get a worker).
    Exit codes: 0 running or passed, 1 failed, 2 unknown run, 130 cancelled.
    """
    raise typer.Exit(asyncio.run(_status(workflow_id, run_id)))


async def _watch(workflow_id: str, as_json: bool) -> int:
    client = await connect_client()
    handle, desc = await running_run(client, workflow_id)
    url = run_url(client, handle.id, handle.run_id or "")
    subject = desc.typed_search_attributes.get(Attr.SUBJECT) or ""
    err_console.print(f"watching run {handle.id} (Ctrl-C stops watching, the run goes on): {url}", highlight=False,
                      soft_wrap=True)
    # Only looking on: Ctrl-C stops watching and leaves the run alone (`cancel ID` is how to stop it).
    return await follow_to_end(client, handle, url, Progress(subject=subject), as_json=as_json, ctrl_c_cancels=False)


def watch(
    workflow_id: str = typer.Argument(..., help="Workflow id of a running run (e.g. chaos-etcd)."),
    as_json: bool = typer.Option(False, "--json", help="Print only the final report as JSON on stdout."),
) -> None:
    """Follow a running run live (one started with --detach or by a schedule) until its report.

    Runs a worker in this process if none picks the run up. Ctrl-C stops watching; the run goes on.
    Exit codes: 0 pass, 1 fail, 2 not running or unknown, 130 stopped watching.
    """
    raise typer.Exit(asyncio.run(_watch(workflow_id, as_json)))


async def _report(workflow_id: str, run_id: str | None, fmt: str, output: Path | None) -> int:
    client = await connect_client()
    if await is_campaign(client, workflow_id, run_id):
        return await campaign_report(client, workflow_id, run_id, fmt, output)
    handle, desc = await lookup_run(client, workflow_id, run_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        # No report yet: JSON gets the live progress; a document or a CI gate needs the finished run.
        if fmt != "json":
            fail(EXIT_BAD_INPUT, f"run {handle.id} is still running; a {fmt} report needs a finished run "
                                 f"(`status {handle.id}` shows where it is, `report --format json` its progress)")
        progress = await live_progress(client, handle, desc)
        if progress is None:
            fail(EXIT_INFRA, f"run {handle.id} has no progress to report: {no_worker_hint(handle.id)}")
        text, code = progress.model_dump_json(indent=2) + "\n", EXIT_PASS
    else:
        report = await _final_report(handle)
        text, code = render(report, fmt), EXIT_FOR_VERDICT[report.verdict]
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        Console(stderr=True).print(f"wrote {output}", highlight=False)
    return code


def report(
    workflow_id: str = typer.Argument(..., help="Workflow id of the run (e.g. chaos-etcd) or of a campaign "
                                                "(campaign-NAME); its latest run."),
    run_id: Optional[str] = typer.Option(None, help="A specific run of that workflow id."),
    fmt: str = typer.Option("json", "--format", help=f"One of: {', '.join(FORMATS)}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """A run's report as JSON, Markdown, a self-contained HTML page with the load timeline, or JUnit XML.

    For a campaign: one row (HTML, Markdown) or one testcase (JUnit) per cell, with the scorecard's regressions.

    Exit codes follow the verdict (0 pass, 1 fail), so `report ID --format junit -o chaos.xml` can gate a pipeline.
    """
    if fmt not in FORMATS:
        fail(EXIT_BAD_INPUT, f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    raise typer.Exit(asyncio.run(_report(workflow_id, run_id, fmt, output)))
