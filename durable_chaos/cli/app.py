"""The `starter.py` command line: start chaos runs and follow them.

Exit codes: 0 pass, 1 verdict fail (or the run failed), 2 bad input, 3 infrastructure unreachable (Docker or
Temporal), 4 stop-all could not confirm every fault undone, 130 interrupted. Every error is one line on stderr.
"""

from __future__ import annotations

import asyncio
from typing import Optional

import typer

from durable_chaos.cli import check, control, emergency, experiments, runs, schedules
from durable_chaos.cli.errors import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS, OneLineErrors, fail
from durable_chaos.cli.options import (
    SLOW_CHECKS_OPTION,
    SLOW_FACTOR_OPTION,
    ABORT_PROBE_OPTION,
    ABORT_QUERY_OPTION,
    COUNTDOWN_OPTION,
    COUNT_OPTION,
    DETACH_OPTION,
    DETECT_ALERT_OPTION,
    DETECT_HTTP_OPTION,
    DETECT_INTERVAL_OPTION,
    DETECT_TIMEOUT_OPTION,
    FAULT_KINDS_EPILOG,
    FAULT_OPTION,
    LOAD_RATE_OPTION,
    MAX_ERROR_RATE_OPTION,
    MAX_FAULT_SECONDS_OPTION,
    MAX_P99_OPTION,
    MAX_UNAVAILABLE_OPTION,
    NOTIFY_OPTION,
    PARAM_OPTION,
    PORT_BASE_OPTION,
    PROJECT_OPTION,
    PROMETHEUS_OPTION,
    QUORUM_OPTION,
    REPORT_JSON_OPTION,
    SUBJECT_OPTION,
    TARGET_OPTION,
)
from durable_chaos.cli.run_input import chaos_input, guardrails
from durable_chaos.cli.start import start_and_follow
from durable_chaos.cli.subjects import subjects
from durable_chaos.runtime.connect import exit_process

app = typer.Typer(
    cls=OneLineErrors,
    help="Durable chaos runs on Temporal: kill a node of a real cluster, watch it get detected and diagnosed, "
    "and be certain it comes back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Typer's Rich help labels every flag `<bool>` as if it took a value (even --help); Click's plain help draws
    # flags as flags.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # Click's help stops at 80 columns even in a wider terminal
)


@app.callback()
def _root() -> None:
    """Durable chaos runs on Temporal. Server: TEMPORAL_ADDRESS / profile, else the embedded dev server."""


@app.command(epilog=FAULT_KINDS_EPILOG)
def chaos(
    subject: str = SUBJECT_OPTION,
    fault: str = FAULT_OPTION,
    param: Optional[list[str]] = PARAM_OPTION,
    target: Optional[str] = TARGET_OPTION,
    count: int = COUNT_OPTION,
    allow_quorum_loss: bool = QUORUM_OPTION,
    max_error_rate: Optional[float] = MAX_ERROR_RATE_OPTION,
    max_p99_ms: Optional[float] = MAX_P99_OPTION,
    max_unavailable_s: Optional[float] = MAX_UNAVAILABLE_OPTION,
    abort_probe: Optional[str] = ABORT_PROBE_OPTION,
    abort_query: Optional[str] = ABORT_QUERY_OPTION,
    prometheus: Optional[str] = PROMETHEUS_OPTION,
    detect_alert: Optional[list[str]] = DETECT_ALERT_OPTION,
    detect_http: Optional[list[str]] = DETECT_HTTP_OPTION,
    detect_timeout: Optional[float] = DETECT_TIMEOUT_OPTION,
    detect_interval: float = DETECT_INTERVAL_OPTION,
    slow_factor: Optional[float] = SLOW_FACTOR_OPTION,
    slow_checks: Optional[int] = SLOW_CHECKS_OPTION,
    countdown: int = COUNTDOWN_OPTION,
    project: Optional[str] = PROJECT_OPTION,
    port_base: Optional[int] = PORT_BASE_OPTION,
    as_json: bool = REPORT_JSON_OPTION,
    detach: bool = DETACH_OPTION,
    interactive: bool = typer.Option(False, "--interactive",
                                     help="Pause before each stage until you press Enter (an `advance` update)."),
    max_fault_seconds: float = MAX_FAULT_SECONDS_OPTION,
    load_rate: float = LOAD_RATE_OPTION,
    notify: Optional[str] = NOTIFY_OPTION,
) -> None:
    """Run one chaos experiment: preflight, load, countdown, fault, detect, diagnose, restore.

    Exit codes: 0 pass, 1 fail, 2 bad input, 3 Docker or Temporal unreachable.
    """
    inp = chaos_input(subject, target, detect_timeout, detect_interval, countdown, project, port_base,
                      max_fault_seconds, interactive, load_rate, fault=fault, params=param, count=count,
                      allow_quorum_loss=allow_quorum_loss,
                      guards=guardrails(max_error_rate, max_p99_ms, max_unavailable_s, abort_probe, abort_query,
                                        prometheus, detect_alert, detect_http),
                      notify=notify, slow={"factor": slow_factor, "checks": slow_checks})
    if interactive and (as_json or detach):
        fail(EXIT_BAD_INPUT, "--interactive needs a terminal to follow the run: drop --json/--detach")
    raise typer.Exit(asyncio.run(start_and_follow(inp, as_json, detach)))


app.command()(experiments.run)
app.command()(subjects)
# Checking a history file alone (ours or another tool's): no Temporal, no Docker.
app.command()(check.check)
app.command()(control.advance)
app.command()(control.cancel)
app.command()(control.abort)
app.command()(control.reap)
# Operations: finding runs, reading their reports, nightly schedules (each in its own module).
app.command("list")(runs.list_runs)
app.command()(runs.status)
app.command()(runs.watch)
app.command()(runs.report)
app.add_typer(schedules.app, name="schedule")
# Guardrails: the emergency stop and the way back.
app.command("stop-all")(emergency.stop_all)
app.command("resume-schedules")(emergency.resume_schedules)


def main() -> None:
    try:
        app()  # always ends in SystemExit carrying the exit code
    except KeyboardInterrupt:
        exit_process(EXIT_INTERRUPTED)
    except SystemExit as done:
        exit_process(done.code if isinstance(done.code, int) else EXIT_FAIL if done.code else EXIT_PASS)
