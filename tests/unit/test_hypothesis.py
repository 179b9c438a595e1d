"""The steady-state hypothesis: each probe judged on the figures the safety check measured. Pure, no server."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from durable_chaos.contracts import Availability, PhaseLatency, Probe
from durable_chaos.hypothesis import judge

MEASURED = Availability(
    longest_gap_ms=1590.0, error_rate=0.37,
    before=PhaseLatency(ops=136, errors=0, p50_ms=3.0, p99_ms=12.0, longest_gap_ms=40.0),
    during=PhaseLatency(ops=139, errors=95, p50_ms=10.0, p99_ms=563.0, longest_gap_ms=1590.0),
    after=PhaseLatency(ops=25, errors=0, p50_ms=3.5, p99_ms=16.7, longest_gap_ms=30.0),
)


def probe(figure: str, mode: str = "during", **tolerance) -> Probe:
    return Probe(figure=figure, mode=mode, tolerance=tolerance)


@pytest.mark.parametrize("p, held, value", [
    (probe("error_rate", between=(0, 0.7)), True, 0.6835),  # 95 of 139
    (probe("error_rate", **{"<": 0.5}), False, 0.6835),
    (probe("error_rate", "before", **{"==": 0}), True, 0.0),
    (probe("p99_ms", "after", **{"<=": 16.7}), True, 16.7),
    (probe("p99_ms", "after", **{"<": 16.7}), False, 16.7),
    (probe("longest_gap_s", **{"<": 1}), False, 1.59),
    (probe("longest_gap_s", "after", **{"<": 1}), True, 0.03),
    (probe("error_rate", "continuously", **{"<": 0.35}), True, 0.3167),  # 95 of 300
    (probe("p99_ms", "continuously", **{"<": 500}), False, 563.0),  # the worst phase's
])
def test_each_probe_is_held_against_its_tolerance(p, held, value):
    [result] = judge([p], MEASURED)
    assert (result.held, result.value) == (held, value), result.detail


def test_a_probe_names_the_figure_the_phase_the_value_and_the_tolerance():
    [result] = judge([Probe(name="clients get answers", figure="longest_gap_s", tolerance={"<": 1})], MEASURED)
    assert result.name == "clients get answers"
    assert result.detail == "longest_gap_s during the fault 1.59 s, wanted < 1"


def test_a_figure_that_was_not_measured_does_not_hold():
    no_after = MEASURED.model_copy(update={"after": PhaseLatency()})
    assert [r.held for r in judge([probe("error_rate", "after", **{"<": 1})], no_after)] == [False]
    [unknown] = judge([probe("error_rate", **{"<": 1})], None)  # the safety check did not run
    assert not unknown.held and unknown.value is None and "not measured" in unknown.detail


@pytest.mark.parametrize("tolerance, message", [
    ({"<": 1, "<=": 2}, 'give exactly one comparison'),
    ({}, 'give exactly one comparison'),
    ({"between": [3, 1]}, "the low bound comes first"),
    ({"~": 1}, "Extra inputs are not permitted"),
])
def test_a_tolerance_is_exactly_one_comparison(tolerance, message):
    with pytest.raises(ValidationError, match=message):
        Probe(figure="p99_ms", tolerance=tolerance)


def test_a_median_over_the_whole_run_is_refused():
    with pytest.raises(ValidationError, match="p50_ms is measured per phase"):
        Probe(figure="p50_ms", mode="continuously", tolerance={"<": 5})
