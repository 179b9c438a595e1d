"""The steady-state hypothesis: what clients may see while a run goes, as probes with tolerances, and what each
probe measured. A run passes only when every probe held.

A probe reads one of the load's own figures (per phase, from the safety check), or asks something itself: an HTTP
GET, a command run in a member (`docker exec`), or a PromQL instant query. Those are sampled once per load window
(activities/sampling.py), and the samples travel in the window's result (`LoadWindow.probes`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from durable_chaos.contracts.urls import check_http_url


# The load's own figures, per phase of the run (durable_chaos/safety/availability.py measures them).
LoadFigure = Literal["error_rate", "p50_ms", "p99_ms", "longest_gap_s"]
# A sampled probe's figures: an HTTP answer's status, body or one JSON field; a command's exit code or output; a
# PromQL query's value.
Figure = Literal["error_rate", "p50_ms", "p99_ms", "longest_gap_s", "status", "body", "json", "exit_code", "output",
                 "value"]
FIGURES: dict[str, tuple[str, ...]] = {
    "load": ("error_rate", "p50_ms", "p99_ms", "longest_gap_s"),
    "http": ("status", "body", "json"),
    "exec": ("exit_code", "output"),
    "promql": ("value",),
}
TEXT_FIGURES = ("body", "output")  # `matches` only; `json` is a number or a text, whichever the field holds
# before the fault; during it (inject until healthy again); after it; or over the whole run.
Mode = Literal["before", "during", "after", "continuously"]
# A sampled text is kept to this many characters (it enters the event history once a window).
TEXT_LIMIT = 1000


class Tolerance(BaseModel):
    """Exactly one comparison: `{"<": 0.05}`, `{"<=": 500}`, `{"==": 0}`, `{"between": [0, 2]}`, or
    `{"matches": "regex"}` for a text figure."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lt: float | None = Field(default=None, alias="<")
    le: float | None = Field(default=None, alias="<=")
    eq: float | None = Field(default=None, alias="==")
    between: tuple[float, float] | None = Field(default=None, description="inclusive, low first")
    matches: str | None = Field(default=None, description="a regular expression the text must contain a match of "
                                                          "(Python's `re.search`): body, output, a JSON text field")

    @model_validator(mode="after")
    def _one(self) -> "Tolerance":
        given = [k for k in ("lt", "le", "eq", "between", "matches") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError('give exactly one comparison: "<", "<=", "==", "between" or "matches"')
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError("between: the low bound comes first")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as err:
                raise ValueError(f"matches: not a regular expression ({err}): {self.matches!r}") from None
        return self


class HttpSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="an http(s) URL, GET once a load window")
    json_field: str | None = Field(default=None, alias="json", description="a dotted path into the JSON body (e.g. "
                                   "`data.status`, `items.0.name`): figure `json` is that field")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_http_url(url, "url")


class ExecSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str = Field(description="the member whose container runs it (`docker exec`)")
    command: list[str] = Field(min_length=1, description="the command and its arguments, no shell")


class PromqlSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the Prometheus base URL (its `/api/v1/query` is asked)")
    query: str = Field(min_length=1, description="an instant query: its first sample's value is the figure")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_http_url(url, "url")


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(default="", description="how the report names it (default: what it reads and the mode)")
    http: HttpSource | None = Field(default=None, description="GET a URL once a load window")
    exec_: ExecSource | None = Field(default=None, alias="exec", description="run a command in a member once a "
                                                                            "load window")
    promql: PromqlSource | None = Field(default=None, description="a PromQL instant query once a load window")
    figure: Figure | None = Field(default=None, description=(
        "the load's: error_rate (failed or unknown / sent, 0-1), p50_ms, p99_ms (latency from when an operation was "
        "due), longest_gap_s (without a successful operation); http: status (default), body, json; exec: exit_code "
        "(default), output; promql: value (default)"))
    mode: Mode = Field(default="during", description="the phase it is judged in")
    tolerance: Tolerance

    @property
    def kind(self) -> str:
        return "http" if self.http else "exec" if self.exec_ else "promql" if self.promql else "load"

    @property
    def sampled(self) -> bool:
        """Asked by the load windows themselves (not read from the load's figures)."""
        return self.kind != "load"

    @property
    def what(self) -> str:
        """The figure it reads: given, or its kind's default."""
        if self.figure is not None:
            return self.figure
        return {"http": "json" if self.http and self.http.json_field else "status", "exec": "exit_code",
                "promql": "value"}.get(self.kind, "")

    @property
    def label(self) -> str:
        """Its name in the report and the key of its samples."""
        if self.name:
            return self.name
        if self.kind == "load":
            return f"{self.figure} {self.mode}"
        source = {"http": lambda: self.http.url, "exec": lambda: f"{self.exec_.service} {' '.join(self.exec_.command)}",
                  "promql": lambda: self.promql.query}[self.kind]()
        return f"{self.kind} {source} {self.what} {self.mode}"

    @field_validator("figure")
    @classmethod
    def _figure_of_its_kind(cls, figure: str | None, info: ValidationInfo) -> str | None:
        given = [k for k, field in (("http", "http"), ("exec", "exec_"), ("promql", "promql"))
                 if info.data.get(field) is not None]
        kind = given[0] if len(given) == 1 else "load"
        if figure is None:
            return None
        if figure not in FIGURES[kind]:
            whose = "the load" if kind == "load" else f"{'a' if kind == 'promql' else 'an'} {kind} probe"
            raise ValueError(f"{figure!r} is not a figure of {whose} (its figures: {', '.join(FIGURES[kind])})")
        if figure == "json" and not (info.data.get("http") and info.data["http"].json_field):
            raise ValueError("json needs the field to read: http: {url: ..., json: data.status}")
        return figure

    @field_validator("tolerance")
    @classmethod
    def _comparison_fits(cls, tolerance: Tolerance, info: ValidationInfo) -> Tolerance:
        if "figure" not in info.data:  # the figure was refused: that is the error to report
            return tolerance
        figure = info.data["figure"]
        if figure is None:
            http = info.data.get("http")
            figure = ("json" if http.json_field else "status") if http else "exit_code" if info.data.get("exec_") \
                else "value"
        if tolerance.matches is not None and figure not in (*TEXT_FIGURES, "json"):
            raise ValueError(f"matches compares a text, and {figure} is a number: give <, <=, == or between (or "
                             f"read a text figure: {', '.join(TEXT_FIGURES)})")
        if tolerance.matches is None and figure in TEXT_FIGURES:
            raise ValueError(f"{figure} is a text: compare it with matches (a regular expression)")
        return tolerance

    @model_validator(mode="after")
    def _measurable(self) -> "Probe":
        sources = [k for k in ("http", "exec_", "promql") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise ValueError("a probe asks one thing: give one of http, exec or promql")
        if not sources and self.figure is None:
            raise ValueError("give a figure of the load (error_rate, p50_ms, p99_ms, longest_gap_s), or something "
                             "to ask: http, exec or promql")
        if self.figure == "p50_ms" and self.mode == "continuously":
            raise ValueError("p50_ms is measured per phase (a median of medians is no median): give before, "
                             "during or after")
        return self


class ProbeSample(BaseModel):
    """One answer of a sampled probe: a number (status, exit code, query value, a numeric JSON field) or a text
    (body, output, a JSON text field), or why there was none."""

    at: datetime = Field(description="when it was asked")
    value: float | None = None
    text: str | None = Field(default=None, description=f"the first {TEXT_LIMIT} characters")
    error: str | None = Field(default=None, description="why there is no answer (timeout, refused, no sample)")


class ProbeResult(BaseModel):
    name: str
    held: bool
    value: float | None = Field(default=None, description="what was measured; a sampled probe's: its first failing "
                                                          "sample's, or its last; None: it could not be")
    samples: int | None = Field(default=None, description="a sampled probe: how many samples fell in its phase")
    failed_at: datetime | None = Field(default=None, description="a sampled probe: its first failing sample's time")
    detail: str = Field(description="one line: the figure, the phase, the value and the tolerance")
