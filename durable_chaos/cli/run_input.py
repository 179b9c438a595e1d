"""A run's options as the user typed them (`chaos`, `schedule create`) turned into its input: exit 2 with one line
when one is wrong, before anything starts."""

from __future__ import annotations

from pydantic import ValidationError

from durable_chaos.cli.common import EXIT_BAD_INPUT, fail, load_subject
from durable_chaos.contracts import (
    DEFAULT_LOAD_RATE,
    MAX_LOAD_RATE,
    ChaosInput,
    ExternalDetector,
    StopConditions,
    check_http_url,
)
from durable_chaos.hosts import check_host_name
from durable_chaos.faults import BadFault, make_fault, parse_params, target_choice
from durable_chaos.slow import slow_rule
from subjects import subject_ref


def host_or_exit(host: str | None) -> str | None:
    """The Docker host `--host` names (None: this machine's, filled in when the run starts); exit 2 if malformed."""
    try:
        return check_host_name(host) if host is not None else None
    except ValueError as err:
        fail(EXIT_BAD_INPUT, str(err))


def _positive(name: str, value: float) -> None:
    if value <= 0:
        fail(EXIT_BAD_INPUT, f"{name} must be positive (got {value:g})")



def guardrails(max_error_rate: float | None = None, max_p99_ms: float | None = None,
               max_unavailable_s: float | None = None, abort_probe: str | None = None, abort_query: str | None = None,
               prometheus: str | None = None, detect_alert: list[str] | None = None,
               detect_http: list[str] | None = None) -> tuple[StopConditions, list[ExternalDetector]]:
    """The guardrail options as a run's input, or exit 2 with one line (nothing started)."""
    if max_error_rate is not None and not 0 <= max_error_rate <= 100:
        fail(EXIT_BAD_INPUT, f"--max-error-rate is a percentage from 0 to 100 (got {max_error_rate:g})")
    if max_p99_ms is not None:
        _positive("--max-p99-ms", max_p99_ms)
    if max_unavailable_s is not None:
        _positive("--max-unavailable-s", max_unavailable_s)
    try:
        stop = StopConditions(max_error_rate_pct=max_error_rate, max_p99_ms=max_p99_ms,
                              max_unavailable_s=max_unavailable_s, abort_probe_url=abort_probe,
                              abort_query=abort_query, prometheus_url=prometheus)
        detectors = [ExternalDetector(kind="http", url=url) for url in detect_http or []]
        for spec in detect_alert or []:
            name, at, url = spec.partition("@")
            detectors.append(ExternalDetector(kind="alert", alert=name.strip() or None, url=url.strip() if at else ""))
    except ValidationError as err:
        fail(EXIT_BAD_INPUT, err.errors()[0]["msg"].removeprefix("Value error, "))
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        fail(EXIT_BAD_INPUT, f"a detector is given twice: {', '.join(twice)}")
    return stop, detectors


def check_port_base(port_base: int | None) -> None:
    if port_base is not None and not 1024 <= port_base <= 65000:
        fail(EXIT_BAD_INPUT, f"--port-base must be between 1024 and 65000 (got {port_base})")


def _check_numbers(detect_timeout: float | None, detect_interval: float, max_fault_seconds: float, countdown: int,
                   port_base: int | None, load_rate: float) -> None:
    if detect_timeout is not None:
        _positive("--detect-timeout", detect_timeout)
    _positive("--detect-interval", detect_interval)
    _positive("--max-fault-seconds", max_fault_seconds)
    if countdown < 0:
        fail(EXIT_BAD_INPUT, f"--countdown cannot be negative (got {countdown})")
    check_port_base(port_base)
    if not 0 < load_rate <= MAX_LOAD_RATE:
        fail(EXIT_BAD_INPUT, f"--load-rate must be above 0 and at most {MAX_LOAD_RATE:g} operations a second "
                             f"(got {load_rate:g})")


def chaos_input(subject: str, target: str | None, detect_timeout: float | None, detect_interval: float,
                countdown: int, project: str | None, port_base: int | None, max_fault_seconds: float,
                interactive: bool = False, load_rate: float = DEFAULT_LOAD_RATE, fault: str = "kill",
                params: list[str] | None = None, count: int = 1, allow_quorum_loss: bool = False,
                guards: tuple[StopConditions, list[ExternalDetector]] | None = None,
                notify: str | None = None, slow: dict[str, float | None] | None = None,
                host: str | None = None) -> ChaosInput:
    """Check a run's options as the user typed them (`chaos`, `schedule create`): exit 2 with one line when wrong.
    The worker's preflight checks them again (and what needs the running system: who leads, what the kernel can do)."""
    definition = load_subject(subject)
    try:
        kind = make_fault(fault, parse_params(params or []))
        target_choice(definition, kind, target, count, allow_quorum_loss, roles=None)
    except BadFault as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    _check_numbers(detect_timeout, detect_interval, max_fault_seconds, countdown, port_base, load_rate)
    given = {k: v for k, v in (slow or {}).items() if v is not None}
    try:
        rule = slow_rule(definition.defaults.slow, given) if given else None
    except ValueError as err:
        fail(EXIT_BAD_INPUT, str(err))
    if notify is not None:
        try:
            check_http_url(notify, "--notify")
        except ValueError as err:
            fail(EXIT_BAD_INPUT, str(err))
    return ChaosInput(
        subject=subject_ref(subject, project=project, port_base=port_base).model_copy(
            update={"host": host_or_exit(host)}),
        fault=fault,
        # As validated: numbers as numbers, so the workflow input and the report show them as the kind reads them.
        fault_params=kind.params.model_dump(mode="json", exclude_defaults=True),
        target=target,
        count=count,
        allow_quorum_loss=allow_quorum_loss,
        detect_timeout_s=detect_timeout,
        detect_interval_s=detect_interval,
        countdown_s=countdown,
        max_fault_s=max_fault_seconds,
        interactive=interactive,
        load_rate=load_rate,
        stop=guards[0] if guards else StopConditions(),
        detectors=guards[1] if guards else [],
        notify_url=notify,
        slow=rule,
    )
