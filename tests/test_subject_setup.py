"""Preflight's guards against a broken setup, against the real Docker CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.docker import compose_client, validate_compose
from contracts import ErrorType
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


def test_the_shipped_compose_file_is_valid():
    from subjects import resolve
    from contracts import SubjectRef

    instance = resolve(SubjectRef(name="etcd", project="t-valid", port_base=24000))
    validate_compose(compose_client(instance), instance)  # raises if the shipped file is broken
