"""How the guardrails read to a person: one wording for a stop condition wherever it shows (the run's summary, the
trip's reason in the report, the live view), kept out of the wire models so they stay data."""

from __future__ import annotations

from durable_chaos.contracts import StopConditions, Trip

def one_line(message: str, limit: int) -> str:
    """A message in one line of at most `limit` characters. Docker's and the SDK's messages put the cause last
    ("…: bind: address already in use"), so a long one keeps its end."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    kept = text[-(limit - 1):]
    if text[-limit] != " " and " " in kept[:WORD_CUT]:  # starts mid-word ("…ntainer start"): begin at the next one
        kept = kept[kept.index(" ") + 1:]
    return "…" + kept


# How far into a cut message one_line looks for the start of a word; a longer "word" (an id, a path) is cut.
WORD_CUT = 20


CONDITIONS = ("max_error_rate_pct", "max_p99_ms", "max_unavailable_s", "abort_probe_url", "abort_query")


def condition_label(stop: StopConditions, condition: str) -> str:
    """How a condition (a field name) reads in the run's summary and in its trip."""
    match condition:
        case "max_error_rate_pct":
            return f"error rate > {stop.max_error_rate_pct:g}% over {stop.error_window_s:g}s"
        case "max_p99_ms":
            return f"p99 > {stop.max_p99_ms:g} ms"
        case "max_unavailable_s":
            return f"no successful operation for {stop.max_unavailable_s:g}s"
        case "abort_probe_url":
            return f"{stop.abort_probe_url} not 2xx"
        case "abort_query":
            return f"{stop.abort_query!r} not empty or zero"
    raise ValueError(f"not a stop condition: {condition}")


def condition_labels(stop: StopConditions) -> list[str]:
    """Every condition that is set, as it reads."""
    return [condition_label(stop, c) for c in CONDITIONS if getattr(stop, c) not in (None, "")]


def trip_reason(trip: Trip) -> str:
    return f"stopped: {trip.condition} ({trip.detail})"
