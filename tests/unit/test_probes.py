"""Hypothesis probes that ask something (http, exec in a member, promql) and the `matches` comparator: the judge
on hand-built samples, the model's checks, and bad probes in a file (one line with the file, line and field, exit
2). Pure: no server, no Docker."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.sampling import _field, probe_timeout
from durable_chaos.contracts import LoadWindow, Probe, ProbeSample
from durable_chaos.experiment.load import BadExperiment, load_experiment
from durable_chaos.experiment.plan import plan_lines
from durable_chaos.hypothesis import judge
from tests.conftest import run_command

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
INJECTED, HEALTHY = T0 + timedelta(seconds=3), T0 + timedelta(seconds=6)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def windows(name: str, samples: list[ProbeSample]) -> list[LoadWindow]:
    """One window a sample, as the load loop records them."""
    return [LoadWindow(start=s.at, end=s.at + timedelta(seconds=1), ops=100, errors=0, ops_per_s=100,
                       probes={name: [s]}) for s in samples]


def one(probe: Probe, samples: list[ProbeSample], injected=INJECTED, healthy=HEALTHY):
    [result] = judge([probe], None, windows(probe.label, samples), injected, healthy)
    return result


EXEC = {"exec": {"service": "etcd1", "command": ["etcdctl", "endpoint", "health"]}}
# exit 0 before the kill (s 0-2), 1 while the member is down (3-5), 0 after (6-8)
EXITS = [ProbeSample(at=at(s), value=0.0 if s < 3 or s >= 6 else 1.0) for s in range(9)]


@pytest.mark.parametrize("mode, held, samples", [
    ("before", True, 3), ("during", False, 3), ("after", True, 3), ("continuously", False, 9)])
def test_an_exec_probe_holds_in_a_phase_when_every_sample_there_does(mode, held, samples):
    r = one(Probe.model_validate({**EXEC, "mode": mode, "tolerance": {"==": 0}}), EXITS)
    assert (r.held, r.samples) == (held, samples), r.detail


def test_a_broken_probe_names_the_samples_and_the_first_failing_value_and_time():
    r = one(Probe.model_validate({"name": "etcd1 healthy", **EXEC, "tolerance": {"==": 0}}), EXITS)
    assert (r.name, r.held, r.value, r.failed_at) == ("etcd1 healthy", False, 1.0, at(3))
    assert r.detail == ("exit_code of `etcdctl endpoint health` in etcd1 during the fault: 3 of 3 samples failed, "
                        "the first 1 at 12:00:03.000 UTC, wanted == 0")


def test_a_phase_without_a_sample_is_not_measured_and_not_held():
    r = one(Probe.model_validate({**EXEC, "mode": "after", "tolerance": {"==": 0}}), EXITS, healthy=None)
    assert (r.held, r.samples) == (False, 0)
    assert "not measured" in r.detail
    # never injected: every sample is before the fault, none during
    assert not one(Probe.model_validate({**EXEC, "tolerance": {"==": 0}}), EXITS, injected=None).held
    assert one(Probe.model_validate({**EXEC, "mode": "before", "tolerance": {"<=": 1}}), EXITS, injected=None).held


def test_an_http_status_and_a_body_that_matches():
    status = Probe.model_validate({"http": {"url": "http://127.0.0.1:9090/-/healthy"}, "mode": "continuously",
                                   "tolerance": {"==": 200}})
    assert status.what == "status"
    assert one(status, [ProbeSample(at=at(s), value=200.0) for s in range(8)]).held
    r = one(status, [ProbeSample(at=at(1), value=200.0), ProbeSample(at=at(4), error="unreachable (connection "
                                                                                      "refused)")])
    assert not r.held and "the first no answer (unreachable (connection refused)) at 12:00:04.000 UTC" in r.detail
    body = Probe.model_validate({"http": {"url": "http://127.0.0.1:9090/-/healthy"}, "figure": "body",
                                 "tolerance": {"matches": "ok|healthy"}})
    assert one(body, [ProbeSample(at=at(4), text="Prometheus Server is Healthy.\n")]).held is False  # case counts
    assert one(body, [ProbeSample(at=at(4), text="all ok")]).held


def test_a_json_field_is_a_number_or_a_text():
    p = Probe.model_validate({"http": {"url": "http://127.0.0.1:2379/health", "json": "health"},
                              "tolerance": {"matches": "^true$"}})
    assert p.what == "json"
    assert one(p, [_field(at(4), {"health": "true"}, "health")]).held
    assert not one(p, [_field(at(4), {"health": "false"}, "health")]).held
    assert _field(at(4), {"data": {"items": [{"n": 3}]}}, "data.items.0.n").value == 3.0
    assert _field(at(4), {"a": 1}, "b").error == "no field b in the answer"
    n = Probe.model_validate({"http": {"url": "http://h/x", "json": "n"}, "tolerance": {"between": [1, 3]}})
    assert one(n, [ProbeSample(at=at(4), value=2.0), ProbeSample(at=at(5), text="3")]).held


def test_a_promql_value_and_an_exec_output():
    q = Probe.model_validate({"promql": {"url": "http://127.0.0.1:9090", "query": "min(up)"}, "mode": "after",
                              "tolerance": {"==": 1}})
    assert one(q, [ProbeSample(at=at(7), value=1.0)]).held
    assert not one(q, [ProbeSample(at=at(7), error="the query returned no sample")]).held
    out = Probe.model_validate({**EXEC, "figure": "output", "mode": "during", "tolerance": {"matches": "healthy"}})
    r = one(out, [ProbeSample(at=at(4), text="127.0.0.1:2379 is unhealthy: failed")])  # re.search: found inside
    assert r.held
    r = one(out, [ProbeSample(at=at(4), text="Error response from daemon: container abc is not running\n")])
    assert not r.held and "'Error response from daemon: container abc is not running'" in r.detail


def test_samples_of_other_probes_and_the_load_figures_are_apart():
    load = Probe(figure="error_rate", tolerance={"<": 1})
    sampled = Probe.model_validate({"name": "x", **EXEC, "tolerance": {"==": 0}})
    results = judge([load, sampled], None, windows("y", EXITS), INJECTED, HEALTHY)
    assert [(r.name, r.held) for r in results] == [("error_rate during", False), ("x", False)]
    assert "no sample" in results[1].detail
    assert not load.sampled and sampled.sampled


@pytest.mark.parametrize("probe, field, message", [
    ({**EXEC, "tolerance": {"matches": "ok"}}, "tolerance", "matches compares a text, and exit_code is a number"),
    ({"figure": "p99_ms", "tolerance": {"matches": "ok"}}, "tolerance", "p99_ms is a number"),
    ({**EXEC, "figure": "output", "tolerance": {"==": 0}}, "tolerance", "output is a text: compare it with matches"),
    ({**EXEC, "figure": "status", "tolerance": {"==": 0}}, "figure", "'status' is not a figure of an exec probe"),
    ({"figure": "body", "tolerance": {"matches": "x"}}, "figure", "'body' is not a figure of the load"),
    ({"http": {"url": "ftp://host/x"}, "tolerance": {"==": 200}}, "http.url", "not an http(s) URL"),
    ({"promql": {"url": "127.0.0.1:9090", "query": "up"}, "tolerance": {"==": 1}}, "promql.url", "not an http(s)"),
    ({"http": {"url": "http://h/x"}, "figure": "json", "tolerance": {"==": 1}}, "figure", "json needs the field"),
    ({"http": {"url": "http://h/x"}, "figure": "body", "tolerance": {"matches": "(["}}, "tolerance",
     "not a regular expression"),
    ({"exec": {"service": "etcd1", "command": ["x"], "shell": True}, "tolerance": {"==": 0}}, "exec.shell",
     "Extra inputs"),
    ({"http": {"url": "http://h/x"}, **EXEC, "tolerance": {"==": 0}}, "", "a probe asks one thing"),
    ({"tolerance": {"==": 0}}, "", "give a figure of the load"),
])
def test_a_bad_probe_is_refused_naming_its_field(probe, field, message):
    with pytest.raises(ValidationError) as err:
        Probe.model_validate(probe)
    first = err.value.errors()[0]
    assert ".".join(str(p) for p in first["loc"]) == field and message in first["msg"], err.value


def write(tmp_path: Path, hypothesis: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text("subject: etcd\nsteps:\n  - fault: kill\n    target: etcd1\nhypothesis:\n" + hypothesis)
    return path


@pytest.mark.parametrize("hypothesis, where", [
    ("  - exec: {service: etcd9, command: [ls]}\n    tolerance: {'==': 0}\n",
     "experiment.yaml:6: hypothesis[0].exec.service: 'etcd9' is not a member of etcd (members: etcd1, etcd2, etcd3)"),
    ("  - exec: {service: etcd1, command: [ls]}\n    tolerance: {matches: ok}\n",
     "experiment.yaml:7: hypothesis[0].tolerance: matches compares a text, and exit_code is a number"),
    ("  - http: {url: 'ftp://127.0.0.1/x'}\n    tolerance: {'==': 200}\n",
     "experiment.yaml:6: hypothesis[0].http.url: url is not an http(s) URL with a host: 'ftp://127.0.0.1/x'"),
    ("  - http: {url: 'http://127.0.0.1:1/'}\n    timeout: 3\n    tolerance: {'==': 200}\n",
     "experiment.yaml:7: hypothesis[0].timeout: Extra inputs are not permitted"),
    ("  - name: a\n    http: {url: 'http://127.0.0.1:1/'}\n    tolerance: {'==': 200}\n"
     "  - name: a\n    exec: {service: etcd2, command: [ls]}\n    tolerance: {'==': 0}\n",
     "experiment.yaml:9: hypothesis[1].name: another probe is named 'a'"),
])
def test_a_bad_probe_in_a_file_is_one_line_with_the_file_line_and_field(tmp_path, hypothesis, where):
    with pytest.raises(BadExperiment) as err:
        load_experiment(write(tmp_path, hypothesis))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}/{where}"), message


@pytest.mark.parametrize("probe, line", [
    ("exec: {service: etcd9, command: [ls]}", "6: hypothesis[0].exec.service: 'etcd9' is not a member of etcd"),
    ("promql: {url: 'ftp://h', query: up}", "6: hypothesis[0].promql.url: url is not an http(s) URL with a host"),
])
def test_a_bad_probe_exits_2_with_that_one_line_on_stderr_and_nothing_on_stdout(tmp_path, probe, line):
    path = write(tmp_path, f"  - {probe}\n    tolerance: {{'==': 0}}\n")
    proc = run_command([sys.executable, "starter.py", "run", str(path)], env=None, timeout=60)
    [error] = proc.stderr.strip().splitlines()
    assert (proc.returncode, proc.stdout) == (2, "") and error.startswith(f"error: {path}:{line}"), proc.stderr


def test_the_plan_words_each_sampled_probe_and_the_run_input_carries_it(tmp_path):
    loaded = load_experiment(write(tmp_path, "  - name: victim up\n    exec: {service: etcd1, command: [etcdctl, "
                                             "endpoint, health]}\n    tolerance: {'==': 0}\n"))
    [probe] = loaded.run_input.hypothesis
    assert probe.exec_.command == ["etcdctl", "endpoint", "health"]
    assert ("hypothesis: victim up - exit_code of `etcdctl endpoint health` in etcd1, asked once a load window (1s); "
            "every sample during the fault == 0; the run fails if one does not, or none is taken"
            ) in plan_lines(loaded)
    # the wire form round-trips (the workflow's input, and each load window's request)
    assert Probe.model_validate(probe.model_dump(mode="json")) == probe


def test_a_probe_never_outlasts_its_window():
    assert probe_timeout(1.0) == 0.8 and probe_timeout(10.0) == 2.0
