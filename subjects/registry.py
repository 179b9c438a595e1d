"""Finding subjects: one mechanism for the shipped ones and a user's own.

- Python entry points in the group `durable_chaos.subjects` (the shipped etcd, nats and postgres register there
  too, in pyproject.toml): `name = "package.module:OBJECT"`, where OBJECT is a `Subject` or a subclass of it.
- A subject *folder* (a compose file + `subject.yaml`), given by path (`--subject ./my-subject`), or found by name
  in the folders listed in `CHAOS_SUBJECT_PATH` (separated by `:`; each entry is a subject folder or a folder of
  them).

A worker resolves a run's `SubjectRef` the same way, so one that does not know a subject rejects the run in
preflight, before anything is started or killed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from durable_chaos.contracts import SubjectRef
from subjects.base import Subject, SubjectInstance, UnknownSubject

ENTRY_POINT_GROUP = "durable_chaos.subjects"
PATH_ENV = "CHAOS_SUBJECT_PATH"
SUBJECT_FILE = "subject.yaml"


@dataclass(frozen=True)
class Found:
    """A subject known to this process, before it is loaded: what `starter.py subjects` lists."""

    name: str
    origin: str  # "entry point subjects.etcd:ETCD", "folder /abs/path"
    folder: Path | None = None


@functools.cache
def _entry_points() -> dict[str, object]:
    # Read once per process: it reads every installed distribution's metadata, some 50 ms of CPU here, and every
    # activity resolves its subject (a load window each second, per subject). A plugin installed later needs a new
    # worker, as new code does anyway.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(name: str, ep) -> Subject:
    try:
        obj = ep.load()
    except Exception as err:  # a broken third-party plugin must not take the CLI down with a traceback
        raise UnknownSubject(f"subject {name!r} ({ep.value}) cannot be loaded: {type(err).__name__}: {err}") from err
    subject = obj() if isinstance(obj, type) else obj
    if not isinstance(subject, Subject):
        raise UnknownSubject(f"entry point {name!r} ({ep.value}) is not a Subject")
    subject.origin = subject.origin or f"entry point {ep.value}"
    return subject


def is_folder_ref(text: str) -> bool:
    """`--subject ./x`, `/abs/x`, `~/x` or anything with a slash is a path; a bare word is a name."""
    return "/" in text or text.startswith((".", "~"))


def _search_path() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]


def _folders_on_path() -> dict[str, Path]:
    """name -> folder for every subject folder under CHAOS_SUBJECT_PATH (first one wins)."""
    from subjects.declarative import subject_name

    found: dict[str, Path] = {}
    for entry in _search_path():
        candidates = [entry] if (entry / SUBJECT_FILE).is_file() else sorted(p for p in entry.glob("*") if p.is_dir())
        for folder in candidates:
            if (folder / SUBJECT_FILE).is_file():
                found.setdefault(subject_name(folder), folder.resolve())
    return found


def known() -> list[Found]:
    """Every subject this process can load by name: entry points first, then the search path."""
    out = [Found(name, f"entry point {ep.value}") for name, ep in sorted(_entry_points().items())]
    names = {f.name for f in out}
    out += [Found(name, f"folder {folder}", folder) for name, folder in _folders_on_path().items() if name not in names]
    return out


def load_folder(folder: str | Path) -> Subject:
    from subjects.declarative import load_subject_folder

    return load_subject_folder(Path(folder).expanduser())


def get_subject(name_or_path: str) -> Subject:
    """The subject a user named: a shipped/installed name, a name on CHAOS_SUBJECT_PATH, or a folder path."""
    if is_folder_ref(name_or_path):
        return load_folder(name_or_path)
    eps = _entry_points()
    if name_or_path in eps:
        return _load_entry_point(name_or_path, eps[name_or_path])
    folders = _folders_on_path()
    if name_or_path in folders:
        return load_folder(folders[name_or_path])
    known_names = sorted(set(eps) | set(folders))
    raise UnknownSubject(f"unknown subject {name_or_path!r} (known: {', '.join(known_names) or 'none'}; "
                         f"or give a subject folder's path, e.g. --subject ./my-subject)")


def subject_ref(name_or_path: str, project: str | None = None, port_base: int | None = None) -> SubjectRef:
    """The reference a run carries: a folder subject by its absolute path, so any worker on this host finds it."""
    subject = get_subject(name_or_path)
    folder = str(subject.folder.resolve()) if is_folder_ref(name_or_path) else None
    return SubjectRef(name=subject.name, folder=folder, project=project, port_base=port_base)


def resolve(ref: SubjectRef) -> SubjectInstance:
    if ref.folder is not None:
        if not Path(ref.folder).is_dir():
            raise UnknownSubject(f"subject {ref.name!r}: folder {ref.folder} does not exist on this worker")
        subject = load_folder(ref.folder)
    else:
        subject = get_subject(ref.name)
    return SubjectInstance(
        subject=subject,
        project=ref.project or subject.default_project,
        port_base=ref.port_base if ref.port_base is not None else subject.default_port_base,
    )
