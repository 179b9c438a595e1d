"""`starter.py run CAMPAIGN.yaml`: a campaign file, started as one `ChaosCampaignWorkflow` and followed live as a
table of its cells (or only listed with `--dry-run`); `report CAMPAIGN_ID` for a campaign. Same `--json`,
`--detach` and exit codes as a run: 0 every cell passed, 1 a cell failed (or did not finish), 2 bad input,
3 Docker or Temporal unreachable, 130 cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from durable_chaos.campaign.load import LoadedCampaign, load_campaign, plan_lines
from durable_chaos.cli.campaign_reports import cell_row, render
from durable_chaos.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    QUERY_TIMEOUT,
    connect_client,
    err_console,
    exit_code_for_failure,
    fail,
    has_live_worker,
    no_worker_hint,
    run_url,
    say_detached,
    worker_if_needed,
)
from durable_chaos.cli.follow import _Watcher
from durable_chaos.cli.hosts import is_local, on_default_host, route
from durable_chaos.cli.run_input import check_port_base
from durable_chaos.cli.subjects import build_images_with_progress
from durable_chaos.contracts import WORKFLOW_TASK_TIMEOUT
from durable_chaos.contracts.campaign import (
    CAMPAIGN_WORKFLOW_NAME,
    CampaignInput,
    CampaignProgress,
    CampaignReport,
    CellResult,
    campaign_id,
)
from durable_chaos.experiment.load import BadExperiment
from durable_chaos.faults.steps import check_steps
from durable_chaos.runtime.connect import task_queue

STATE_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "yellow", "error": "yellow",
               "cancelled": "yellow", "running": "bold cyan", "pending": "dim"}


def run_campaign(file: Path, overrides: dict[str, str], dry_run: bool, as_json: bool, detach: bool,
                 project: str | None, port_base: int | None) -> int:
    check_port_base(port_base)
    try:
        loaded = load_campaign(file, overrides, project=project, port_base=port_base)
    except BadExperiment as err:
        fail(EXIT_BAD_INPUT, str(err))
    if dry_run:
        print("\n".join(plan_lines(loaded)))
        print("dry run: nothing was started or touched")
        return EXIT_PASS
    return asyncio.run(start_and_follow(loaded, as_json, detach))


def cells_on_default_host(inp: CampaignInput) -> CampaignInput:
    """Cells that name no host run on this machine's, as a `chaos` run does."""
    cells = []
    for cell in inp.cells:
        run_input = on_default_host(cell.run_input)
        cells.append(cell.model_copy(update={"host": run_input.subject.host, "run_input": run_input}))
    return inp.model_copy(update={"cells": cells})


def _build_images(loaded: LoadedCampaign) -> None:
    """Every image any cell needs, before anything starts: a cell must not fail halfway through a campaign on a
    build."""
    seen: set[str] = set()
    for cell in loaded.cells:
        for what, images in [(cell.subject.name, cell.subject.images())] + [
                (f"fault {f.kind}", f.images()) for f in check_steps(cell.subject, cell.steps)]:
            if what not in seen:
                seen.add(what)
                build_images_with_progress(what, images)


async def start_and_follow(loaded: LoadedCampaign, as_json: bool, detach: bool) -> int:
    from workflows.campaign import ChaosCampaignWorkflow  # with its activities: imported on use (start-up)
    inp = cells_on_default_host(loaded.input)
    client = await connect_client()
    # Every cell's host has a worker now and serves the cell's subject, before any cell starts.
    routed = {}
    for cell in inp.cells:
        subject = cell.run_input.subject
        key = (subject.host, subject.name, subject.folder)
        if key not in routed:
            routed[key] = await route(client, subject)
    if any(is_local(c.host) for c in inp.cells):  # other hosts' workers build what their cells need there
        _build_images(loaded)
    maybe_worker = all(routed.values()) and await has_live_worker(client, task_queue())
    try:
        handle = await client.start_workflow(
            ChaosCampaignWorkflow.run, inp,
            # One run of a campaign at a time; the scorecard finds the earlier ones by this id.
            id=campaign_id(inp.name), task_queue=task_queue(), id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            static_summary=f"campaign {inp.name}: {len(inp.cells)} cells, {inp.parallelism} at once")
    except WorkflowAlreadyStartedError:
        fail(EXIT_BAD_INPUT, f"campaign {inp.name} is already running ({campaign_id(inp.name)}); wait for it or "
                             f"cancel it")
    url = run_url(client, handle.id, handle.result_run_id or "")
    err_console.print(f"campaign {handle.id} started: {url}", highlight=False, soft_wrap=True)
    if detach:
        return say_detached(handle, url, maybe_worker, as_json)
    first = CampaignProgress(campaign=inp.name, parallelism=inp.parallelism,
                             cells=[CellResult.of(c) for c in inp.cells])
    return await follow_campaign(client, handle, url, first, as_json=as_json, maybe_worker=maybe_worker)


def cells_table(p: CampaignProgress | CampaignReport, url: str, regressed: set[str] = frozenset()) -> Table:
    """Every cell on one line: what the live view redraws and the final report prints."""
    done = sum(c.state not in ("pending", "running") for c in p.cells)
    title = f"campaign {p.campaign}: {done}/{len(p.cells)} cells done, {p.parallelism} at once at most"
    table = Table(title=title, title_justify="left", caption=url, caption_justify="left", header_style="bold")
    for column in ("cell", "state", "TTD", "TTR", "safety", "diagnosis", "run"):
        table.add_column(column, no_wrap=column != "cell")
    for c in p.cells:
        state, ttd, ttr, safety, diagnosis = cell_row(c)
        key = Text(c.key) + (Text("  regressed", style="bold red") if c.key in regressed else Text(""))
        table.add_row(key, Text(state, style=STATE_STYLE.get(state, "")), ttd, ttr, safety, diagnosis,
                      c.workflow_id or "-")
    return table


def print_campaign_report(console: Console, r: CampaignReport, url: str) -> None:
    s = r.scorecard
    lines = []
    if s.unavailable:
        lines.append(Text(f"scorecard: no comparison: {s.unavailable}", style="yellow"))
    elif s.previous_run_id is None:
        lines.append(Text("scorecard: first run of this campaign, nothing to compare with", style="dim"))
    else:
        lines.append(Text(f"scorecard: compared with run {s.previous_run_id}: {len(s.regressions)} regressions"))
        lines += [Text(f"  regressed: {c.key}: {c.detail}", style="red") for c in s.regressions]
        lines += [Text(f"  new cell: {k}") for k in s.new_cells] + [Text(f"  removed cell: {k}") for k in
                                                                     s.removed_cells]
    verdict = Text(f"campaign verdict: {r.verdict.upper()}", style="bold green" if r.verdict == "pass" else "bold red")
    console.print(Group(cells_table(r, url, {c.key for c in s.regressions}), *lines, verdict))


async def _query(handle: WorkflowHandle) -> CampaignProgress:
    from workflows.campaign import ChaosCampaignWorkflow  # with its activities: imported on use (start-up)
    return await handle.query(ChaosCampaignWorkflow.progress, result_type=CampaignProgress,
                              rpc_timeout=QUERY_TIMEOUT)


async def follow_campaign(client: Client, handle: WorkflowHandle, url: str, first: CampaignProgress, *,
                          as_json: bool, maybe_worker: bool | None = None) -> int:
    """The cells live until the campaign closes (a worker in this process if none picks it up), then its report.
    Ctrl-C cancels the campaign: its running cells are cancelled and restore their faults; a second Ctrl-C stops
    watching."""
    out = err_console if as_json else Console()
    last = first
    try:
        async with worker_if_needed(client, handle, maybe_worker):
            with Live(cells_table(first, url), console=out, transient=True, refresh_per_second=4) as live:
                loop = asyncio.get_running_loop()
                watcher = _Watcher(handle, live, interactive=False, ctrl_c_cancels=True)
                loop.add_signal_handler(signal.SIGINT, watcher.on_interrupt)
                try:
                    while not watcher.result.done():
                        with contextlib.suppress(Exception):  # a query can race the end or a worker restart
                            last = await _query(handle)
                            live.update(cells_table(last, url))
                        await asyncio.wait([watcher.result], timeout=0.5)
                    report: CampaignReport = watcher.result.result()
                finally:
                    loop.remove_signal_handler(signal.SIGINT)
    except WorkflowFailureError as err:
        code, message = exit_code_for_failure(err)
        with contextlib.suppress(Exception):
            last = await asyncio.wait_for(_query(handle), 5)
        out.print(cells_table(last, url))
        if code == EXIT_INTERRUPTED:
            err_console.print("campaign cancelled: its running cells were cancelled and undid their faults",
                              highlight=False)
            return EXIT_INTERRUPTED
        fail(code, message)
    except asyncio.CancelledError:
        fail(EXIT_INTERRUPTED, f"stopped watching; campaign {handle.id} goes on (see {url})")
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print_campaign_report(out, report, url)
    return EXIT_PASS if report.verdict == "pass" else EXIT_FAIL


async def is_campaign(client: Client, workflow_id: str, run_id: str | None) -> bool:
    with contextlib.suppress(Exception):  # unknown ids are `report`'s own business to explain
        desc = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        return desc.workflow_type == CAMPAIGN_WORKFLOW_NAME
    return False


async def campaign_report(client: Client, workflow_id: str, run_id: str | None, fmt: str,
                          output: Path | None) -> int:
    """`report CAMPAIGN_ID`: the finished campaign's report in `fmt`; a running one's progress as JSON."""
    from workflows.campaign import ChaosCampaignWorkflow  # with its activities: imported on use (start-up)
    handle = client.get_workflow_handle_for(ChaosCampaignWorkflow.run, workflow_id, run_id=run_id)
    desc = await handle.describe()
    handle = client.get_workflow_handle_for(ChaosCampaignWorkflow.run, workflow_id, run_id=desc.run_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        if fmt != "json":
            fail(EXIT_BAD_INPUT, f"campaign {workflow_id} is still running; a {fmt} report needs a finished one "
                                 f"(`report {workflow_id}` gives its cells' progress as JSON)")
        if not await has_live_worker(client, desc.task_queue):
            fail(EXIT_INFRA, f"campaign {workflow_id} has no progress to report: {no_worker_hint(workflow_id)}")
        text, code = (await _query(handle)).model_dump_json(indent=2) + "\n", EXIT_PASS
    else:
        try:
            report = await handle.result(follow_runs=False)
        except WorkflowFailureError as err:
            code, message = exit_code_for_failure(err)
            fail(code if code != EXIT_PASS else EXIT_FAIL, f"campaign {workflow_id} has no report: {message}")
        text = render(report, fmt, lambda wid, rid: run_url(client, wid, rid))
        code = EXIT_PASS if report.verdict == "pass" else EXIT_FAIL
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        err_console.print(f"wrote {output}", highlight=False)
    return code
