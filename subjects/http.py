"""Helpers for subjects that speak HTTP: one client configuration for checks, one for load, and failures described
in a few words."""

from __future__ import annotations

import functools
import ssl

import httpx

from subjects.http_load import CouldNotConnect, LoadClient


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs ~25 ms of CPU, which every session (one per load window, one per
    # detection) would otherwise pay - straight into time-to-detect, and a real cost with many subjects at once.
    return ssl.create_default_context()


def http_client() -> httpx.AsyncClient:
    # Local traffic only; never pick up a proxy from the environment.
    return httpx.AsyncClient(trust_env=False, verify=_tls_context(), limits=httpx.Limits(max_connections=64))


def load_client() -> LoadClient:
    """The client load goes through, where the generator's own CPU is what limits it on a busy host: httpx spends
    1-3 ms of CPU per request in its connection pool (httpcore rescans every connection on each request,
    encode/httpcore#928), aiohttp a fraction of that, and subjects/http_load.py less again (measured with
    bench/loadgen.py, beside wrk). Checks keep httpx. Local traffic only: no proxy from the environment."""
    return LoadClient()


def describe(exc: BaseException) -> str:
    """A failed call in the words a violation uses: "unreachable (connection refused)", "no answer (timeout)"."""
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError)):
        return "unreachable (connection refused)"
    if isinstance(exc, CouldNotConnect):
        return f"unreachable ({exc})"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "no answer (timeout)"
    return f"{type(exc).__name__}: {exc}"[:200]
