"""What every `starter.py` command shares: exit codes, one-line errors, the connection, input checks, run URLs.

Exit codes: 0 pass, 1 verdict fail (or the run failed), 2 bad input, 3 infrastructure unreachable (Docker or
Temporal), 130 interrupted. Every error is one line on stderr.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, CancelledError

from contracts import ChaosInput, ErrorType, SubjectRef
from runtime.connect import connect_config, ui_base_url
from runtime.devserver import ServerUnreachable, connect_or_start
from runtime.worker import SearchAttributesMissing, ensure_search_attributes
from subjects import UnknownSubject, get_subject

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INFRA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_FOR_ERROR = {
    ErrorType.BAD_INPUT: EXIT_BAD_INPUT,
    ErrorType.DOCKER_UNAVAILABLE: EXIT_INFRA,
    ErrorType.SUBJECT_UNHEALTHY: EXIT_INFRA,
}

err_console = Console(stderr=True)


def fail(code: int, message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    err_console.print(f"[dim]{message}[/]")


def run_url(client: Client, workflow_id: str, run_id: str) -> str:
    base = ui_base_url(connect_config()["target_host"])
    return f"{base}/namespaces/{client.namespace}/workflows/{workflow_id}/{run_id}/history"


def exit_code_for_failure(err: BaseException) -> tuple[int, str]:
    """Walk the failure chain to the ApplicationError that says what went wrong."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type in EXIT_FOR_ERROR:
            return EXIT_FOR_ERROR[cause.type], cause.message
        if isinstance(cause, CancelledError):
            return EXIT_INTERRUPTED, "the run was cancelled (the fault, if injected, was restored)"
        cause = cause.__cause__
    return EXIT_FAIL, f"the run failed: {err.__cause__ or err}"


async def connect_client(say=say) -> Client:
    """Connect (starting the embedded dev server if none is configured) and make sure our search attributes exist."""
    try:
        client = await connect_or_start(say=say)
        await ensure_search_attributes(client)
        return client
    except ServerUnreachable as err:
        fail(EXIT_INFRA, str(err))
    except SearchAttributesMissing as err:
        fail(EXIT_INFRA, str(err))


def _positive(name: str, value: float) -> None:
    if value <= 0:
        fail(EXIT_BAD_INPUT, f"{name} must be positive (got {value:g})")


def chaos_input(subject: str, target: str | None, detect_timeout: float, detect_interval: float, countdown: int,
                project: str | None, port_base: int | None) -> ChaosInput:
    """Check a run's options the way a user typed them (exit 2 with one line when wrong) and build its input."""
    try:
        definition = get_subject(subject)
    except UnknownSubject as err:
        fail(EXIT_BAD_INPUT, str(err))
    if target is not None and target not in definition.targets:
        fail(EXIT_BAD_INPUT, f"{target!r} is not a target of {subject} (targets: {', '.join(definition.targets)})")
    _positive("--detect-timeout", detect_timeout)
    _positive("--detect-interval", detect_interval)
    if countdown < 0:
        fail(EXIT_BAD_INPUT, f"--countdown cannot be negative (got {countdown})")
    if port_base is not None and not 1024 <= port_base <= 65000:
        fail(EXIT_BAD_INPUT, f"--port-base must be between 1024 and 65000 (got {port_base})")
    return ChaosInput(
        subject=SubjectRef(name=subject, project=project, port_base=port_base),
        target=target,
        detect_timeout_s=detect_timeout,
        detect_interval_s=detect_interval,
        countdown_s=countdown,
    )
