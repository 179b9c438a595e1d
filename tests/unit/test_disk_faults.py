"""Disk faults without Docker: parameters and their bounds, labels, refusals, and the cgroup files as the kernel
writes them (v1's blkio.throttle files and v2's io.max, laid out in a scratch directory)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from durable_chaos.contracts import ContainerState, Sign
from durable_chaos.faults import BadFault, Target, make_fault
from durable_chaos.faults.disk import V1_FILES, DiskSlow, MemberCgroup, host_dir


def test_disk_slow_defaults_cap_writes_by_bytes_and_operations():
    fault = make_fault("disk-slow")
    assert fault.wanted() == {"rbps": None, "wbps": 1_000_000, "riops": None, "wiops": 50}
    assert fault.label() == "disk-slow (write 1.00 MB/s, 50 write IOPS)"
    assert make_fault("disk-slow", {"write_bps": "512kib", "read_iops": "20"}).wanted()["wbps"] == 524288


@pytest.mark.parametrize("params, says", [
    ({"write_bps": "-1mb"}, "write_bps=-1mb is invalid"),
    ({"write_bps": "1kb"}, "write_bps=1kb is invalid"),  # below one 4 KiB block a second
    ({"write_iops": "0"}, "write_iops=0 is invalid"),
    ({"read_iops": "-5"}, "read_iops=-5 is invalid"),
    ({"rate": "1mb"}, "fault disk-slow has no parameter 'rate'"),
])
def test_disk_slow_refuses_bad_rates_in_one_line(params, says):
    with pytest.raises(BadFault) as err:
        make_fault("disk-slow", params)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_member_without_a_declared_data_path_is_refused():
    t = Target(service="redis1", container=None, addresses={}, tag="t", data_path=None)  # type: ignore[arg-type]
    assert make_fault("disk-slow").refuse([t]) == (
        "disk-slow: redis1 has no data path declared by its subject (Subject.data_paths); nothing was injected")


def v1_cgroup(tmp_path: Path) -> MemberCgroup:
    for name in V1_FILES.values():
        (tmp_path / name).write_text("")
    return MemberCgroup(tmp_path, v2=False)


def test_v1_limits_are_written_one_file_each_and_cleared_with_zero(tmp_path):
    cg = v1_cgroup(tmp_path)
    written: list[tuple[str, str]] = []
    original = Path.write_text

    def record(self, text, *a, **kw):
        written.append((self.name, text))
        return original(self, text, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "write_text", record)
        cg.set("254:0", make_fault("disk-slow").wanted())
        cg.clear("254:0")
    assert ("blkio.throttle.write_bps_device", "254:0 1000000\n") in written
    assert ("blkio.throttle.write_iops_device", "254:0 50\n") in written
    assert ("blkio.throttle.read_bps_device", "254:0 0\n") in written  # zero: no rule (v1)
    assert written[-4:] == [(name, "254:0 0\n") for name in V1_FILES.values()]


def test_v1_limits_read_back_as_the_kernel_lists_them(tmp_path):
    cg = v1_cgroup(tmp_path)
    (tmp_path / V1_FILES["wbps"]).write_text("254:0 1000000\n8:0 5000\n")
    (tmp_path / V1_FILES["wiops"]).write_text("254:0 50\n")
    assert cg.limits() == {"254:0": {"wbps": 1000000, "wiops": 50}, "8:0": {"wbps": 5000}}
    assert cg.limits("8:0") == {"8:0": {"wbps": 5000}}


def test_v2_io_max_is_one_line_and_max_means_no_limit(tmp_path):
    cg = MemberCgroup(tmp_path, v2=True)
    cg.set("254:0", {"wbps": 1000000, "wiops": 50})
    assert (tmp_path / "io.max").read_text() == "254:0 rbps=max wbps=1000000 riops=max wiops=50\n"
    assert cg.limits() == {"254:0": {"wbps": 1000000, "wiops": 50}}
    cg.clear("254:0")
    assert (tmp_path / "io.max").read_text() == "254:0 rbps=max wbps=max riops=max wiops=max\n"
    assert cg.limits() == {}


def container(mounts=(), upper="/var/lib/docker/overlay2/abc/diff"):
    return SimpleNamespace(name="m", mounts=[SimpleNamespace(destination=d, source=s) for d, s in mounts],
                           graph_driver=SimpleNamespace(name="overlay2", data={"UpperDir": upper}))


def test_data_in_the_writable_layer_is_under_the_upper_dir_and_probes_write_beside_it():
    assert host_dir(container(), "/etcd-data") == (Path("/var/lib/docker/overlay2/abc/diff/etcd-data"),
                                                   Path("/var/lib/docker/overlay2/abc"))


def test_data_in_a_volume_is_under_the_deepest_mount_holding_it():
    c = container(mounts=[("/data", "/vol/a/_data"), ("/data/jetstream", "/vol/b/_data"), ("/other", "/x")])
    assert host_dir(c, "/data/jetstream/x") == (Path("/vol/b/_data/x"), Path("/vol/b/_data/x"))
    assert host_dir(c, "/data") == (Path("/vol/a/_data"), Path("/vol/a/_data"))


def test_the_signature_names_the_throttled_member():
    c = ContainerState(service="etcd2", container="c", status="running", running=True,
                       signs=[Sign(kind="disk-slow", detail="block I/O limit on 254:0: wbps=1000000")])
    assert DiskSlow.seen_on(c) == "etcd2's disk I/O is throttled in its cgroup (block I/O limit on 254:0: wbps=1000000)"
    assert DiskSlow.seen_on(c.model_copy(update={"signs": []})) is None


# -- clock-skew -------------------------------------------------------------------------------------------------------

def member(service: str, entrypoint: list[str], env: list[str], clock_file: str | None) -> Target:
    config = SimpleNamespace(entrypoint=entrypoint, cmd=["--name", service], env=env, image="img:1")
    return Target(service=service, container=SimpleNamespace(config=config), addresses={}, tag="t",  # type: ignore[arg-type]
                  clock_file=clock_file)


FAKETIME_ENV = ["LD_PRELOAD=/usr/local/lib/libfaketime.so.1", "FAKETIME_TIMESTAMP_FILE=/etc/chaos-clock-offset"]


def test_clock_skew_takes_a_bounded_signed_offset():
    assert make_fault("clock-skew").label() == "clock-skew (+30 s)"
    assert make_fault("clock-skew", {"offset_s": "-90"}).label() == "clock-skew (-90 s)"
    for bad in ("100000", "-86401", "1.5", "soon"):
        with pytest.raises(BadFault) as err:
            make_fault("clock-skew", {"offset_s": bad})
        assert f"fault clock-skew: offset_s={bad} is invalid" in str(err.value)


def test_clock_skew_refuses_a_member_its_subject_does_not_run_under_libfaketime():
    etcd = member("etcd2", ["etcd"], [], None)
    assert make_fault("clock-skew").refuse([etcd]) == (
        "clock-skew: etcd2 runs etcd, which its subject does not run under libfaketime (Go programs such as etcd and "
        "NATS read the clock through the vDSO, out of its reach); nothing was injected")
    nats = member("nats1", ["/usr/local/bin/nats-server"], [], None)
    assert "nats1 runs nats-server," in make_fault("clock-skew").refuse([nats])


def test_clock_skew_refuses_an_image_that_does_not_preload_libfaketime():
    upstream = member("pg1", ["patroni"], [], "/etc/chaos-clock-offset")
    assert make_fault("clock-skew").refuse([upstream]) == (
        "clock-skew: pg1's image img:1 does not preload libfaketime with /etc/chaos-clock-offset (LD_PRELOAD or "
        "CHAOS_FAKETIME_PRELOAD, FAKETIME_TIMESTAMP_FILE); nothing was injected")
    everywhere = member("pg1", ["patroni"], FAKETIME_ENV, "/etc/chaos-clock-offset")
    assert make_fault("clock-skew").refuse([everywhere]) is None
    # The shipped image: PostgreSQL alone runs under libfaketime, through a wrapper (Patroni's timed waits hang).
    wrapped = member("pg1", ["patroni"], ["CHAOS_FAKETIME_PRELOAD=/usr/local/lib/libfaketime.so.1",
                                          "CHAOS_FAKETIME_PROGRAMS=postgres",
                                          "FAKETIME_TIMESTAMP_FILE=/etc/chaos-clock-offset"], "/etc/chaos-clock-offset")
    assert make_fault("clock-skew").refuse([wrapped]) is None
    elsewhere = member("pg1", ["patroni"], [*FAKETIME_ENV[:1], "FAKETIME_TIMESTAMP_FILE=/tmp/x"], "/etc/chaos-clock-offset")
    assert "does not preload libfaketime" in make_fault("clock-skew").refuse([elsewhere])


def test_the_shipped_subjects_declare_data_paths_and_only_postgres_clock_files():
    from subjects.registry import get_subject

    assert get_subject("etcd").data_paths["etcd2"] == "/etcd-data"
    assert get_subject("nats").data_paths["nats1"] == "/data/jetstream"
    pg = get_subject("postgres")
    assert pg.data_paths["pg1"] == "/var/lib/postgresql/patroni"
    assert set(pg.clock_files) == {"pg1", "pg2", "pg3"}
    assert get_subject("etcd").clock_files == {} and get_subject("nats").clock_files == {}


# -- disk-full --------------------------------------------------------------------------------------------------------

def with_mounts(*mounts):
    return SimpleNamespace(mounts=[SimpleNamespace(destination=d, source=s, type=t, name=n) for d, s, t, n in mounts])


@pytest.mark.parametrize("options, bounded", [
    ({"type": "ext4", "device": "/dev/loop3"}, True),
    ({"type": "tmpfs", "o": "size=64m"}, True),
    ({"type": "tmpfs"}, False),  # half the host's memory: no bound worth the name
    ({}, False),  # a plain local volume: a directory on the host's disk
])
def test_disk_full_takes_only_a_volume_bounded_by_its_own_filesystem(monkeypatch, options, bounded):
    from durable_chaos.faults import disk_full

    monkeypatch.setattr(disk_full.docker.volume, "inspect", lambda name: SimpleNamespace(options=options))
    c = with_mounts(("/data", "/var/lib/docker/volumes/v/_data", "volume", "t-1_data"))
    found = disk_full.bounded_volume(c, "/data/appendonly")
    if bounded:
        assert found == disk_full.DataVolume("t-1_data", "/data")
    else:
        assert found == ("its data volume t-1_data is not a filesystem of its own with a size (a loop-backed ext4, "
                         "a tmpfs with size=): filling it would fill the host's disk")


def test_disk_full_refuses_data_in_the_writable_layer_or_a_bind_mount():
    from durable_chaos.faults.disk_full import bounded_volume

    assert bounded_volume(with_mounts(), "/etcd-data") == (
        "its data (/etcd-data) is in its container's writable layer, on the host's disk: filling it would fill the "
        "host's")
    assert bounded_volume(with_mounts(("/data", "/srv/data", "bind", None)), "/data") == (
        "its data (/data) is in a bind mount of /srv/data, on the host's disk: filling it would fill the host's")


def test_the_fill_allocates_what_is_free_then_writes_to_enospc_and_never_twice():
    from durable_chaos.faults.disk_full import fill_script

    script = fill_script("ab12cd34")
    assert script.startswith("if [ -e /v/.chaos-ballast-ab12cd34 ]; then echo already; exit 0; fi")
    assert 'fallocate -l "$(df -B1 --output=avail /v | tail -1)" /v/.chaos-ballast-ab12cd34' in script
    assert "dd if=/dev/zero of=/v/.chaos-ballast-ab12cd34 bs=4096 oflag=append conv=notrunc" in script
    assert make_fault("disk-full").label() == "disk-full"
    with pytest.raises(BadFault):
        make_fault("disk-full", {"size": "1g"})
