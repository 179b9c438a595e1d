"""cpu, memory and process-pause without Docker: parameters, the cgroup files they read and write in both
layouts, refusals, and how the diagnosis words what it finds."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from durable_chaos.contracts import ContainerState, Sign
from durable_chaos.faults import CATALOG, BadFault, make_fault
from durable_chaos.faults.base import Target
from durable_chaos.faults.cgroups import Cgroup, state
from durable_chaos.faults.resource import Cpu, Memory


def v1(tmp_path: Path, **files: str) -> Cgroup:
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return Cgroup(tmp_path, v2=False)


def test_a_cpu_quota_is_written_as_a_share_of_the_period_and_lifted_with_minus_one(tmp_path):
    g = v1(tmp_path, cpu__cfs_quota_us="-1\n", cpu__cfs_period_us="100000\n")
    cpu = make_fault("cpu", {"cpus": 0.25})
    assert Cpu.limit_now(g) is None
    cpu.write_limit(g, None)
    assert Cpu.limit_now(g) == 25000 and cpu.label() == "cpu 0.25 CPU"
    cpu.write_no_limit(g)
    assert Cpu.limit_now(g) is None


def test_cgroup_v2_keeps_quota_and_period_in_one_file(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    g = Cgroup(tmp_path, v2=True)
    make_fault("cpu", {"cpus": 0.5}).write_limit(g, None)
    assert (tmp_path / "cpu.max").read_text() == "50000 100000\n"
    make_fault("cpu").write_no_limit(g)
    assert (tmp_path / "cpu.max").read_text() == "max 100000\n" and Cpu.limit_now(g) is None


def test_the_default_memory_limit_is_a_fifth_above_the_use_now(tmp_path):
    g = v1(tmp_path, memory__usage_in_bytes=f"{100 * 2**20}\n", memory__limit_in_bytes=f"{(1 << 63) - 4096}\n")
    assert Memory.limit_now(g) is None  # v1's "no limit" is a huge number, not -1
    make_fault("memory").write_limit(g, None)
    assert Memory.limit_now(g) == 120 * 2**20


@pytest.mark.parametrize("kind, params, says", [
    ("cpu", {"cpus": 0}, "cpus=0 is invalid"),
    ("cpu", {"cpus": 100}, "cpus=100 is invalid"),
    ("memory", {"limit_mb": -1}, "limit_mb=-1 is invalid"),
    ("process-pause", {"process": ""}, "process= is invalid"),
    ("process-pause", {"process": "a-name-longer-than-15"}, "is invalid"),
])
def test_out_of_range_parameters_are_one_line(kind, params, says):
    with pytest.raises(BadFault) as err:
        make_fault(kind, params)
    assert says in str(err.value)


def test_a_member_with_a_limit_of_its_own_is_refused_so_undo_never_guesses_it():
    own = SimpleNamespace(host_config=SimpleNamespace(nano_cpus=500_000_000, cpu_quota=0, memory=0))
    t = Target(service="etcd2", container=own, addresses={}, tag="1a2b3c4d")
    why = make_fault("cpu").refuse([t])
    assert why.startswith("cpu: etcd2 has a limit of its own (nano_cpus=500000000)") and "nothing was injected" in why


def test_the_process_state_is_read_past_a_name_with_spaces_and_parentheses(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("4242 (my (odd) name) T 1 4242 4242 0 -1")
    monkeypatch.setattr("durable_chaos.faults.cgroups.Path", lambda p: stat if p.endswith("/stat") else Path(p))
    assert state(4242) == "T"


@pytest.mark.parametrize("kind, sign, says", [
    ("cpu", "a CPU quota of 10000 µs per period in its cgroup", "etcd2 is CPU-limited"),
    ("memory", "a memory limit of 21 MiB in its cgroup", "etcd2 is memory-limited"),
    ("process-pause", "patroni (pid 7) is stopped", "etcd2 runs, but patroni (pid 7) is stopped (SIGSTOP)"),
])
def test_each_kind_names_its_sign_for_the_diagnosis(kind, sign, says):
    c = ContainerState(service="etcd2", container="x", running=True, status="running", signs=[Sign(kind=kind,
                                                                                                  detail=sign)])
    assert CATALOG[kind].seen_on(c).startswith(says)
    assert all(CATALOG[k].seen_on(c) is None for k in ("cpu", "memory", "process-pause") if k != kind)
