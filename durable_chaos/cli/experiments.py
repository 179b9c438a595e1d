"""`starter.py run FILE`: an experiment file, run with the same live view, exit codes, `--json` and `--detach` as
`chaos` (a file is the reviewed, versioned form of `chaos`'s flags), or only shown with `--dry-run`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from durable_chaos.campaign.load import is_campaign_file
from durable_chaos.campaign.model import schema as campaign_schema
from durable_chaos.cli.campaigns import run_campaign
from durable_chaos.cli.common import EXIT_BAD_INPUT, EXIT_PASS, fail
from durable_chaos.cli.options import (
    DETACH_OPTION,
    PORT_BASE_OPTION,
    PROJECT_OPTION,
    REPORT_JSON_OPTION,
)
from durable_chaos.cli.run_input import check_port_base, host_or_exit
from durable_chaos.cli.start import start_and_follow
from durable_chaos.experiment.load import BadExperiment, Loaded, load_experiment, with_seed
from durable_chaos.experiment.model import schema
from durable_chaos.experiment.plan import plan_lines


def overrides_or_exit(sets: list[str] | None) -> dict[str, str]:
    overrides = {}
    for pair in sets or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            fail(EXIT_BAD_INPUT, f"--set {escape(pair)!r}: expected NAME=VALUE, e.g. --set victim=etcd2")
        overrides[name.strip()] = value
    return overrides


def load_or_exit(file: Path, sets: list[str] | None, project: str | None, port_base: int | None) -> Loaded:
    overrides = overrides_or_exit(sets)
    check_port_base(port_base)
    try:
        return load_experiment(file, overrides, project=project, port_base=port_base)
    except BadExperiment as err:
        fail(EXIT_BAD_INPUT, escape(str(err)))


def run(
    file: Optional[Path] = typer.Argument(None, help="The experiment file (YAML; its schema: `--schema`, or "
                                                     "durable_chaos/experiment/experiment.schema.json), or a "
                                                     "campaign file (`campaign:` at the top; its schema: "
                                                     "durable_chaos/campaign/campaign.schema.json)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", metavar="NAME=VALUE",
                                             help="Override a variable the file declares under `vars` (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Check the file and print the plan (members that could be hit, what is checked, "
                                      "the deadlines; for a campaign, every cell) without starting or touching "
                                      "anything."),
    as_json: bool = REPORT_JSON_OPTION,
    detach: bool = DETACH_OPTION,
    project: Optional[str] = PROJECT_OPTION,
    port_base: Optional[int] = PORT_BASE_OPTION,
    host: Optional[str] = typer.Option(None, "--host", help="The Docker host the subject runs on, instead of the "
                                                            "file's `host:` (default: this machine). A campaign "
                                                            "names its hosts in its matrix."),
    show_schema: bool = typer.Option(False, "--schema", help="Print the experiment file's JSON Schema and exit."),
    show_campaign_schema: bool = typer.Option(False, "--campaign-schema",
                                              help="Print the campaign file's JSON Schema and exit."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The seed of the file's random fault schedules: a run's "
                                                            "report names its seed, and the same seed replays it."),
) -> None:
    """Run an experiment file: the same run, live view and exit codes as `chaos`, described in a file you review.

    A campaign file runs its experiment once per cell of its matrix (subjects x faults x targets), live as a table
    of cells, and compares the run with the campaign's previous one (the scorecard). Exit codes: 0 pass (a
    campaign: every cell), 1 fail, 2 bad input (the file, its line and field), 3 Docker or Temporal unreachable
    (or the host has no worker now), 5 inconclusive (a fault never took effect), 6 unknown host, 8/9 a subject
    folder/subject the host's worker does not serve.
    """
    if show_schema or show_campaign_schema:
        print(json.dumps(campaign_schema() if show_campaign_schema else schema(), indent=2))
        raise typer.Exit(EXIT_PASS)
    if file is None:
        fail(EXIT_BAD_INPUT, "give the experiment file: `starter.py run FILE` (examples/ holds some)")
    if is_campaign_file(file):  # `campaign:` at the top: the experiment over a matrix (durable_chaos/campaign/)
        if host is not None:
            fail(EXIT_BAD_INPUT, "--host names one experiment's host: a campaign names its hosts in its matrix "
                                 "(`hosts: [...]`, or `host:` per subject)")
        raise typer.Exit(run_campaign(file, overrides_or_exit(sets), dry_run, as_json, detach, project, port_base))
    loaded = load_or_exit(file, sets, project, port_base)
    if host is not None:
        inp = loaded.run_input
        loaded = dataclasses.replace(loaded, run_input=inp.model_copy(update={"subject": inp.subject.model_copy(
            update={"host": host_or_exit(host)})}))
    if seed is not None:
        try:
            loaded = with_seed(loaded, seed)
        except BadExperiment as err:
            fail(EXIT_BAD_INPUT, escape(str(err)))
    if dry_run:
        print("\n".join(plan_lines(loaded)))
        print("dry run: nothing was started or touched")
        raise typer.Exit(EXIT_PASS)
    raise typer.Exit(asyncio.run(start_and_follow(loaded.run_input, as_json, detach)))
