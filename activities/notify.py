"""Posting a run's summary to a webhook when the run ends (`--notify URL`, or the worker's CHAOS_NOTIFY_URL).

The worker's URL is read here, in the activity, and only here: a Slack webhook URL is a credential, and nothing read
in workflow code or passed to an activity stays out of the event history.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_chaos.contracts import NotifyPost, bad_input, check_http_url

NOTIFY_URL_ENV = "CHAOS_NOTIFY_URL"
# One attempt; the workflow's retry policy spaces the next ones out.
POST_TIMEOUT_S = 10.0


def worker_notify_url() -> str | None:
    """This worker's CHAOS_NOTIFY_URL, checked (ValueError naming it when malformed), or None when unset."""
    url = os.environ.get(NOTIFY_URL_ENV, "").strip()
    return check_http_url(url, NOTIFY_URL_ENV) if url else None


def where(url: str) -> str:
    """What a log line or an error may say about a URL: its host, never its path (a webhook's token is there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


@activity.defn
async def post_notice(req: NotifyPost) -> int:
    """POST the summary as JSON; returns the receiver's HTTP status. Connection errors and 5xx, 408, 429 are
    retried (the workflow's retry policy); any other 4xx will not get better by asking again."""
    if req.url is not None:
        url = req.url
    else:
        try:
            url = worker_notify_url()
        except ValueError as err:
            raise bad_input(f"this worker's {err}") from None
        if url is None:  # unset since the run's preflight (the worker restarted without it): nobody to tell
            activity.logger.warning("%s is no longer set on this worker: notification dropped", NOTIFY_URL_ENV)
            return 0
    try:
        async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as http:
            resp = await http.post(url, json=req.notice.model_dump(mode="json"))
    except httpx.HTTPError as err:
        # The exception's text can carry the full URL: say only the host.
        raise ApplicationError(f"{where(url)}: {type(err).__name__}") from None
    if resp.status_code >= 400:
        retryable = resp.status_code >= 500 or resp.status_code in (408, 429)
        raise ApplicationError(f"{where(url)} answered HTTP {resp.status_code}", non_retryable=not retryable)
    return resp.status_code
