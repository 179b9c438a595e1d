"""Connecting to Temporal through `temporalio.envconfig`.

TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS settings and profiles (TEMPORAL_PROFILE, the config file)
all work as in the `temporal` CLI. With none of them set we talk to 127.0.0.1:7233 - the embedded dev server.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from durable_chaos.contracts import TASK_QUEUE
from durable_chaos.runtime import tracing

DEFAULT_ADDRESS = "127.0.0.1:7233"
# The SDK core's own (Rust) warnings, e.g. "Failing workflow task". Python's logging shows them on stderr.
CORE_LOGGER = logging.getLogger("temporalio.core")


def connect_config() -> dict[str, Any]:
    config = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return config


def task_queue() -> str:
    """The task queue runs go to; CHAOS_TASK_QUEUE separates fleets (or tests) sharing one namespace."""
    return os.environ.get("CHAOS_TASK_QUEUE") or TASK_QUEUE


def uses_default_server() -> bool:
    """True when the user configured no server: only then may we start one for them."""
    configured = dict(ClientConfig.load_client_connect_config())
    return "target_host" not in configured and not os.environ.get("TEMPORAL_PROFILE")


def ui_base_url(target_host: str) -> str:
    """Best guess at the web UI for a server address (the dev server serves it on port 8233)."""
    if "tmprl.cloud" in target_host:
        return "https://cloud.temporal.io"
    host, _, port = target_host.rpartition(":")
    ui_port = os.environ.get("TEMPORAL_UI_PORT") or (8233 if port == "7233" else int(port) + 1000)
    return f"http://{host or '127.0.0.1'}:{ui_port}"


def telemetry(**config: Any) -> TelemetryConfig:
    """The SDK runtime's telemetry (`config`: e.g. metrics), with core's log lines forwarded to CORE_LOGGER.

    Why: core writes them on stdout by default, and `starter.py chaos --json` runs an embedded worker in its own
    process, so one warning landed in front of the JSON a pipeline parses (CI31)."""
    return TelemetryConfig(logging=LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                                                 forwarding=LogForwardingConfig(logger=CORE_LOGGER)), **config)


@functools.cache
def quiet_runtime() -> Runtime:
    """The runtime for clients that serve no metrics: the SDK's default, but for where core's lines go."""
    return Runtime(telemetry=telemetry())


async def connect(timeout_s: float = 5.0, runtime: Runtime | None = None) -> Client:
    """`runtime`: one serving metrics (runtime/metrics.py); `quiet_runtime()` otherwise."""
    return await Client.connect(
        **connect_config(), data_converter=pydantic_data_converter, connect_timeout=timedelta(seconds=timeout_s),
        interceptors=tracing.interceptors(), runtime=runtime or quiet_runtime(),
    )


def exit_process(code: int) -> None:
    """Exit without interpreter finalization. The SDK's Rust threads can outlive the event loop and abort a
    finalizing interpreter (temporalio/sdk-python#300: "PyGILState_Release ... finalizing", exit 134 instead of
    our code), which would break every exit code a script or CI pipeline gates on."""
    tracing.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
