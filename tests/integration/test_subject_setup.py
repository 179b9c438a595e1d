"""Preflight's guards against a broken setup, against the real Docker CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities import images
from activities.docker import compose_client, validate_compose
from durable_chaos.contracts import ErrorType
from subjects import SubjectInstance
from subjects.etcd import Etcd


class BrokenEtcd(Etcd):
    def __init__(self, folder: Path):
        self.folder = folder


def test_a_broken_compose_file_is_bad_input_with_a_one_line_reason(tmp_path):
    (tmp_path / "docker-compose.yaml").write_text("services:\n  etcd1:\n    image: [unclosed\n")
    instance = SubjectInstance(subject=BrokenEtcd(tmp_path), project="t-broken", port_base=24000)
    with pytest.raises(ApplicationError) as err:
        validate_compose(compose_client(instance), instance)
    assert err.value.type == ErrorType.BAD_INPUT and err.value.non_retryable
    assert "compose file of subject 'etcd' is broken" in err.value.message
    assert "\n" not in err.value.message


def test_a_compose_file_edited_after_it_was_found_valid_is_checked_again(tmp_path):
    # Preflight remembers a valid compose file instead of asking `compose config` every run: an edit must not hide.
    good = (Path(__file__).parents[2] / "subjects" / "etcd" / "docker-compose.yaml").read_text()
    (tmp_path / "docker-compose.yaml").write_text(good)
    instance = SubjectInstance(subject=BrokenEtcd(tmp_path), project="t-edited", port_base=24000)
    validate_compose(compose_client(instance), instance)
    (tmp_path / "docker-compose.yaml").write_text(good.replace("services:", "services:\n  broken: [unclosed", 1))
    with pytest.raises(ApplicationError) as err:
        validate_compose(compose_client(instance), instance)
    assert "compose file of subject 'etcd' is broken" in err.value.message


def test_the_shipped_compose_file_is_valid():
    from subjects import resolve
    from durable_chaos.contracts import SubjectRef

    instance = resolve(SubjectRef(name="etcd", project="t-valid", port_base=24000))
    validate_compose(compose_client(instance), instance)  # raises if the shipped file is broken


def test_a_debian_suite_the_host_does_not_track_comes_from_the_hosts_mirror(tmp_path, monkeypatch):
    # The etcd image is trixie's etcd-server on a bookworm host: mmdebstrap takes a sources file with its own suites,
    # so passing the host's file would quietly install bookworm's etcd 3.4 instead.
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
                       "Components: main\n")
    monkeypatch.setattr(images, "DEBIAN_SOURCES", sources)
    assert images.debian_mirror("bookworm") == [str(sources)]
    assert images.debian_mirror("trixie") == ["deb http://mirror.example/debian trixie main"]
