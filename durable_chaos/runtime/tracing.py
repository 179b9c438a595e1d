"""Optional OpenTelemetry tracing (`pip install -e .[tracing]`), on when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: spans for starting a run, its workflow tasks and every activity,
exported over OTLP/HTTP (port 4318 on a collector; the exporter reads the rest of the standard OTEL_* variables).

Without the extra installed the endpoint is ignored after one warning line: tracing is never a reason not to run.
"""

from __future__ import annotations

import functools
import os
import sys

from temporalio.client import Interceptor

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "durable-chaos"


@functools.cache
def interceptors() -> tuple[Interceptor, ...]:
    """The tracing interceptor when an OTLP endpoint is configured and the extra is installed; else none. Given to
    the client, it also traces every worker built on that client."""
    if not any(os.environ.get(name) for name in ENDPOINT_ENVS):
        return ()
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as err:
        print(f"warning: {ENDPOINT_ENVS[0]} is set but the tracing extra is not installed ({err.name} missing): "
              f"running without tracing (pip install -e '.[tracing]')", file=sys.stderr, flush=True)
        return ()
    # The standard OTEL_SERVICE_NAME names the service when set.
    resource = Resource.create({SERVICE_NAME_KEY: os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # Workflow spans even for runs nobody traced the start of (a schedule's firings, `temporal workflow start`).
    return (TracingInterceptor(always_create_workflow_spans=True),)


def flush() -> None:
    """Export the spans still buffered: the processes end with os._exit (runtime/connect.py says why), which skips
    the exporter's own flush at interpreter exit."""
    if not interceptors():
        return
    from opentelemetry import trace
    trace.get_tracer_provider().shutdown()
