"""Reading a subject folder: every error names the file and the field, on one line, so `chaos --subject ./x` can
exit 2 before touching anything."""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from subjects.base import BadSubjectFile, Subject, UnknownSubject
from subjects.declarative.spec import COMPOSE_FILE, SUBJECT_FILE, SubjectFile
from subjects.declarative.subject import DeclarativeSubject



def _one_line_yaml_error(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{path}: YAML error at {where}{problem}"


def _one_line_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    # Discriminated unions add the tag to the location ("probes.0.http.path"): keep what a user wrote.
    loc = ".".join(str(p) for p in first["loc"] if p not in (
        "http", "tcp", "exec", "dockerfile", "wheel", "debian", "probe list", "data operations"))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "union_tag_invalid":
        msg = f"unknown kind {first['input'].get('kind')!r} (kinds: http, tcp, exec)" if isinstance(
            first.get("input"), dict) else msg
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc or 'top level'}: {msg}{more}"


def read_subject_file(folder: Path) -> SubjectFile:
    path = folder / SUBJECT_FILE
    if not folder.is_dir():
        raise UnknownSubject(f"{folder}: no such subject folder")
    if not path.is_file():
        raise BadSubjectFile(f"{folder}: no {SUBJECT_FILE} (a subject folder holds {COMPOSE_FILE} and {SUBJECT_FILE})")
    if not (folder / COMPOSE_FILE).is_file():
        raise BadSubjectFile(f"{folder}: no {COMPOSE_FILE} (a subject folder holds {COMPOSE_FILE} and {SUBJECT_FILE})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BadSubjectFile(_one_line_yaml_error(path, err)) from None
    if not isinstance(raw, dict):
        raise BadSubjectFile(f"{path}: top level: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return SubjectFile.model_validate(raw)
    except ValidationError as err:
        raise BadSubjectFile(_one_line_validation_error(path, err)) from None


def subject_name(folder: Path) -> str:
    """The name a folder's subject goes by (for CHAOS_SUBJECT_PATH), without validating the rest."""
    try:
        raw = yaml.safe_load((folder / SUBJECT_FILE).read_text())
        return str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") else folder.name
    except (OSError, yaml.YAMLError):
        return folder.name


def load_subject_folder(folder: Path) -> Subject:
    folder = folder.resolve()
    stamp = tuple((folder / f).stat().st_mtime_ns if (folder / f).exists() else 0 for f in (SUBJECT_FILE, COMPOSE_FILE))
    return _load(folder, stamp)


@functools.lru_cache(maxsize=64)
def _load(folder: Path, _stamp: tuple) -> Subject:
    # Cached per folder and file times: activities resolve the subject on every call, and an edited file reloads.
    spec = read_subject_file(folder)
    cls: type[DeclarativeSubject] = DeclarativeSubject
    if spec.hook:
        module_name, _, class_name = spec.hook.partition(":")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise BadSubjectFile(f"{folder / SUBJECT_FILE}: hook: cannot load {spec.hook}: {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, DeclarativeSubject)):
            raise BadSubjectFile(f"{folder / SUBJECT_FILE}: hook: {spec.hook} is not a DeclarativeSubject subclass")
    return cls(spec, folder)
