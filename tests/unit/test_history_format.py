"""The history format (docs/history-format.md): what a run writes reads back the same, other tools' histories in
Jepsen's shape are understood, and every kind of bad line is refused with its line number and field."""

from __future__ import annotations

import json

import pytest

from durable_chaos.safety.checkers import HISTORY_MODELS
from durable_chaos.safety.history import read_history, write_part
from durable_chaos.safety.jepsen import BadHistory, FaultWindow, lines_of, parse
from durable_chaos.safety.op import Op

MS = 1_000_000


def ops_of_every_model() -> list[Op]:
    return [
        Op("write", "ok", 0, 2 * MS, key="k1", value="a", process=1, token=7),
        Op("read", "ok", 1 * MS, 3 * MS, key="k1", value="a", process=2, token=7),
        Op("cas", "fail", 4 * MS, 5 * MS, key="k1", value=["x", "b"], process=1, error="cas: k1 did not hold x"),
        Op("publish", "info", 5 * MS, 9 * MS, value={"id": "m1", "publisher": 3, "n": 1}, process=3),
        Op("fetch", "ok", 6 * MS, 7 * MS, value=[["m0", 1]], process=4),
        Op("txn", "ok", 6 * MS, 8 * MS, value=[["append", "x", 1], ["r", "y", [2, 3]]], process=5, token=900),
        Op("write", "fail", 8 * MS, 8 * MS, key="k2", value="c", process=1, capped=True,
           error="not sent: concurrency cap reached"),
        Op("read", "ok", 20 * MS, 21 * MS, key="k1", value="a", final=True),
    ]


def test_a_run_history_reads_back_the_same(tmp_path):
    ops = ops_of_every_model()
    write_part(tmp_path / "0001.jsonl.gz", ops[:-1])
    write_part(tmp_path / "final.jsonl.gz", ops[-1:], [FaultWindow(3 * MS, 12 * MS, "partition etcd2")])
    history = read_history(tmp_path)
    assert history.ops == sorted(ops, key=lambda o: o.invoke_ns)
    assert [(w.start_ns, w.end_ns, w.label) for w in history.faults] == [(3 * MS, 12 * MS, "partition etcd2")]


def test_lines_are_jepsens_shape_and_a_read_asks_for_nothing():
    lines = [json.loads(line) for line in lines_of(ops_of_every_model()[:2])]
    assert lines[0] == {"process": 1, "type": "invoke", "f": "write", "key": "k1", "value": "a", "time": 0}
    assert lines[1] == {"process": 2, "type": "invoke", "f": "read", "key": "k1", "value": None, "time": MS}
    assert lines[2] == {"process": 1, "type": "ok", "f": "write", "key": "k1", "value": "a", "time": 2 * MS,
                        "token": 7}


def test_a_client_slot_with_two_operations_in_flight_writes_the_second_under_a_process_of_its_own():
    ops = [Op("write", "ok", 0, 10, key="k", value="a", process=0),
           Op("write", "ok", 5, 6, key="k", value="b", process=0)]
    lines = [json.loads(line) for line in lines_of(ops)]
    assert {e["process"] for e in lines} == {0, 1}
    assert parse(json.dumps(e) for e in lines).ops == [ops[0], Op("write", "ok", 5, 6, key="k", value="b",
                                                                  process=1)]


def test_a_jepsen_history_from_another_tool():
    text = """
{"index": 0, "type": ":invoke", "f": ":write", "value": 3, "process": 0, "time": 1000}
{"index": 1, "type": ":invoke", "f": ":read", "value": null, "process": 1, "time": 1100}
{"index": 2, "type": ":info", "f": ":start", "value": "partition", "process": ":nemesis", "time": 1150}
{"index": 3, "type": ":ok", "f": ":write", "value": 3, "process": 0, "time": 1200}
{"index": 4, "type": ":ok", "f": ":read", "value": 3, "process": 1, "time": 1300}
{"index": 5, "type": ":invoke", "f": ":cas", "value": [3, 4], "process": 0, "time": 1400}
{"index": 6, "type": ":info", "f": ":stop", "value": null, "process": ":nemesis", "time": 1450}
{"index": 7, "type": ":invoke", "f": ":read", "value": null, "process": 1}
""".splitlines()
    history = parse(text, HISTORY_MODELS["cas-register"].fs, HISTORY_MODELS["cas-register"].shape_error)
    kinds = [(o.kind, o.outcome, o.value, o.process) for o in history.ops]
    # Never completed: the cas and the last read are of unknown outcome.
    assert kinds == [("write", "ok", 3, 0), ("read", "ok", 3, 1), ("cas", "info", [3, 4], 0),
                     ("read", "info", None, 1)]
    assert [(w.start_ns, w.end_ns) for w in history.faults] == [(1150, 1450)]


BAD = [
    ('{"process": 0, "type": "invoke", "f": "write", "value": 1}\n{"process": 0, "type": "ok", ', 2, "json"),
    ('{"process": 0, "type": "invoke", "f": "append", "value": 1}', 1, "f"),
    ('{"process": 0, "type": "invoke", "f": "write", "value": 1}\n{"process": 1, "type": "ok", "f": "write"}', 2,
     "type"),
    ('{"process": 0, "type": "invoke", "f": "cas", "value": [1]}', 1, "value"),
    ('{"process": 0, "type": "started", "f": "read"}', 1, "type"),
    ('{"type": "invoke", "f": "read"}', 1, "process"),
    ('{"process": 0, "type": "invoke", "f": "read", "time": "noon"}', 1, "time"),
    ('{"process": 0, "type": "invoke", "f": "read"}\n{"process": 0, "type": "invoke", "f": "read"}', 2, "process"),
    ('[1, 2]', 1, "json"),
]


@pytest.mark.parametrize("text,line,field", BAD)
def test_bad_lines_are_refused_with_their_line_and_field(text, line, field):
    model = HISTORY_MODELS["cas-register"]
    with pytest.raises(BadHistory) as err:
        parse(text.splitlines(), model.fs, model.shape_error)
    assert (err.value.line, err.value.field) == (line, field)
    assert str(err.value).startswith(f"line {line}: {field}: ")


@pytest.mark.parametrize("model,line", [
    ("queue", '{"process": 0, "type": "invoke", "f": "publish", "value": "m1"}'),
    ("queue", '{"process": 0, "type": "invoke", "f": "fetch"}\n{"process": 0, "type": "ok", "f": "fetch", '
              '"value": [["m1"]]}'),
    ("list-append", '{"process": 0, "type": "invoke", "f": "txn", "value": [["append", "x"]]}'),
])
def test_each_model_refuses_values_of_the_wrong_shape(model, line):
    with pytest.raises(BadHistory) as err:
        parse(line.splitlines(), HISTORY_MODELS[model].fs, HISTORY_MODELS[model].shape_error)
    assert err.value.field == "value"
