"""The steady-state hypothesis: what clients may see while a run goes, as probes with tolerances, and what each
probe measured. A run passes only when every probe held."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The load's own figures, per phase of the run (durable_chaos/safety/availability.py measures them).
Figure = Literal["error_rate", "p50_ms", "p99_ms", "longest_gap_s"]
# before the fault; during it (inject until healthy again); after it; or over the whole run.
Mode = Literal["before", "during", "after", "continuously"]


class Tolerance(BaseModel):
    """Exactly one comparison: `{"<": 0.05}`, `{"<=": 500}`, `{"==": 0}` or `{"between": [0, 2]}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lt: float | None = Field(default=None, alias="<")
    le: float | None = Field(default=None, alias="<=")
    eq: float | None = Field(default=None, alias="==")
    between: tuple[float, float] | None = Field(default=None, description="inclusive, low first")

    @model_validator(mode="after")
    def _one(self) -> "Tolerance":
        given = [k for k in ("lt", "le", "eq", "between") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError('give exactly one comparison: "<", "<=", "==" or "between"')
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError("between: the low bound comes first")
        return self


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", description="how the report names it (default: the figure and the mode)")
    figure: Figure = Field(description="error_rate (failed or unknown / sent, 0-1), p50_ms, p99_ms (latency from "
                                       "when an operation was due), longest_gap_s (without a successful operation)")
    mode: Mode = Field(default="during", description="the phase it is judged in")
    tolerance: Tolerance

    @model_validator(mode="after")
    def _measurable(self) -> "Probe":
        if self.figure == "p50_ms" and self.mode == "continuously":
            raise ValueError("p50_ms is measured per phase (a median of medians is no median): give before, "
                             "during or after")
        return self


class ProbeResult(BaseModel):
    name: str
    held: bool
    value: float | None = Field(default=None, description="what was measured; None: it could not be")
    detail: str = Field(description="one line: the figure, the phase, the value and the tolerance")
