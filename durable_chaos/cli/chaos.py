"""`starter.py chaos`: one experiment from flags (its options are shared with `schedule create`: options.py)."""

from __future__ import annotations

import asyncio

import typer

from durable_chaos.cli.errors import EXIT_BAD_INPUT, fail
from durable_chaos.cli.options import (
    ABORT_PROBE_OPTION,
    ABORT_QUERY_OPTION,
    COUNT_OPTION,
    COUNTDOWN_OPTION,
    DETACH_OPTION,
    DETECT_ALERT_OPTION,
    DETECT_HTTP_OPTION,
    DETECT_INTERVAL_OPTION,
    DETECT_TIMEOUT_OPTION,
    FAULT_KINDS_EPILOG,
    FAULT_OPTION,
    HOST_OPTION,
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
    SLOW_CHECKS_OPTION,
    SLOW_FACTOR_OPTION,
    SUBJECT_OPTION,
    TARGET_OPTION,
)
from durable_chaos.cli.run_input import chaos_input, guardrails
from durable_chaos.cli.start import start_and_follow

# One command, registered here for its epilog (the fault kinds); cli/app.py loads it when it is asked for.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command(epilog=FAULT_KINDS_EPILOG)
def chaos(
    subject: str = SUBJECT_OPTION,
    host: str | None = HOST_OPTION,
    fault: str = FAULT_OPTION,
    param: list[str] | None = PARAM_OPTION,
    target: str | None = TARGET_OPTION,
    count: int = COUNT_OPTION,
    allow_quorum_loss: bool = QUORUM_OPTION,
    max_error_rate: float | None = MAX_ERROR_RATE_OPTION,
    max_p99_ms: float | None = MAX_P99_OPTION,
    max_unavailable_s: float | None = MAX_UNAVAILABLE_OPTION,
    abort_probe: str | None = ABORT_PROBE_OPTION,
    abort_query: str | None = ABORT_QUERY_OPTION,
    prometheus: str | None = PROMETHEUS_OPTION,
    detect_alert: list[str] | None = DETECT_ALERT_OPTION,
    detect_http: list[str] | None = DETECT_HTTP_OPTION,
    detect_timeout: float | None = DETECT_TIMEOUT_OPTION,
    detect_interval: float = DETECT_INTERVAL_OPTION,
    slow_factor: float | None = SLOW_FACTOR_OPTION,
    slow_checks: int | None = SLOW_CHECKS_OPTION,
    countdown: int = COUNTDOWN_OPTION,
    project: str | None = PROJECT_OPTION,
    port_base: int | None = PORT_BASE_OPTION,
    as_json: bool = REPORT_JSON_OPTION,
    detach: bool = DETACH_OPTION,
    interactive: bool = typer.Option(False, "--interactive",
                                     help="Pause before each stage until you press Enter (an `advance` update)."),
    max_fault_seconds: float = MAX_FAULT_SECONDS_OPTION,
    load_rate: float = LOAD_RATE_OPTION,
    notify: str | None = NOTIFY_OPTION,
) -> None:
    """Run one chaos experiment: preflight, load, countdown, fault, detect, diagnose, restore.

    Exit codes: 0 pass, 1 fail, 2 bad input, 3 Docker or Temporal unreachable (or the host has no worker now),
    4 a fault not restored, 5 inconclusive, 6 unknown host, 8 a subject folder the host's worker does not serve,
    9 a subject the host's worker does not allow.
    """
    inp = chaos_input(subject, target, detect_timeout, detect_interval, countdown, project, port_base,
                      max_fault_seconds, interactive, load_rate, fault=fault, params=param, count=count,
                      allow_quorum_loss=allow_quorum_loss,
                      guards=guardrails(max_error_rate, max_p99_ms, max_unavailable_s, abort_probe, abort_query,
                                        prometheus, detect_alert, detect_http),
                      notify=notify, slow={"factor": slow_factor, "checks": slow_checks}, host=host)
    if interactive and (as_json or detach):
        fail(EXIT_BAD_INPUT, "--interactive needs a terminal to follow the run: drop --json/--detach")
    raise typer.Exit(asyncio.run(start_and_follow(inp, as_json, detach)))
