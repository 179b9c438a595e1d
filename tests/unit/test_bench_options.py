"""The benchmark's command line says what its options do."""

from __future__ import annotations

import pytest

from bench.run import parse_args


def test_load_concurrency_is_the_open_loops_cap_not_closed_loop_clients(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "closed-loop load clients per subject" not in help_text
    assert "the load is open loop at the load rate" in help_text


def test_the_open_loops_cap_near_wrks_rate_is_an_option_that_must_be_positive(capsys):
    assert parse_args([]).loadgen_open_concurrency == 64
    assert parse_args(["--loadgen-open-concurrency", "128"]).loadgen_open_concurrency == 128
    with pytest.raises(SystemExit) as exited:
        parse_args(["--loadgen-open-concurrency", "0"])
    assert exited.value.code == 2
    assert "--loadgen-open-concurrency must be at least 1" in capsys.readouterr().err
