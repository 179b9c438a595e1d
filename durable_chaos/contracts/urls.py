"""URLs a run will call (monitoring, probes, webhooks), checked before anything starts."""

from __future__ import annotations

from urllib.parse import urlsplit


def check_http_url(url: str | None, what: str) -> str | None:
    """An http(s) URL with a host and a valid port, or ValueError naming `what` (an option, a variable) in one line:
    every URL a run will call (monitoring, probes, webhooks) is checked before anything starts."""
    if url is None:
        return None
    parts = urlsplit(url)
    try:
        _ = parts.port  # parsed on access: a port out of range or not a number raises ValueError
    except ValueError as err:
        raise ValueError(f"{what} is not a valid URL ({err}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"{what} is not an http(s) URL with a host: {url!r}")
    return url
