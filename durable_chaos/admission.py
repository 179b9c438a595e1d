"""What subjects this worker lets in. A fleet's workers share one Temporal server, and anyone who can start a workflow
there reaches every host's worker: a worker started with `--host` serves only the shipped subjects (and any
installed as plugins) and the folders on its own search path (CHAOS_SUBJECT_PATH), unless told otherwise. A worker
without `--host` (one machine, one user) serves whatever its runs name, as before.

Every activity resolves its subject through `activities.common.resolve_or_bad_input`, which asks here first: a
run that names anything else is refused as bad input before anything is touched. The CLI asks the same question of
the host's record before it starts a run (durable_chaos/runtime/fleet.py).
"""

from __future__ import annotations

from pathlib import Path

from durable_chaos.contracts import Admission, SubjectRef
from durable_chaos.contracts.names import ErrorType

_current = Admission(unrestricted=True)


class NotAllowed(Exception):
    """The run names a subject this worker does not serve. `kind`: ErrorType.SUBJECT_NOT_ALLOWED or
    ErrorType.FOLDER_NOT_ON_HOST (the CLI gives each its own exit code)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def configure(admission: Admission) -> None:
    global _current
    _current = admission


def current() -> Admission:
    return _current


def for_host(subjects: list[str] | None = None) -> Admission:
    """A host worker's admission: `subjects` (names) if given, else every subject it can load by name (entry points
    and the search path's folders); folders: the search path's."""
    from subjects.registry import known

    found = known()
    unknown = sorted(set(subjects or []) - {f.name for f in found})
    if unknown:
        raise ValueError(f"--subjects: unknown subject {unknown[0]!r} (this worker knows: "
                         f"{', '.join(f.name for f in found)})")
    names = subjects if subjects is not None else [f.name for f in found]
    folders = [str(f.folder) for f in found if f.folder is not None and f.name in names]
    return Admission(subjects=sorted(names), folders=sorted(folders))


def check(ref: SubjectRef, admission: Admission | None = None, host: str | None = None) -> None:
    """Raise NotAllowed unless `admission` (this worker's by default) serves `ref`."""
    a = admission or _current
    if a.unrestricted:
        return
    where = f"host {host}'s worker" if host else "this worker"
    if ref.folder is not None:
        folder = str(Path(ref.folder))
        if folder not in a.folders:
            raise NotAllowed(ErrorType.FOLDER_NOT_ON_HOST,
                             f"subject folder {folder} is not one {where} serves (its folders: "
                             f"{', '.join(a.folders) or 'none'}; put the folder on its CHAOS_SUBJECT_PATH)")
        return
    if ref.name not in a.subjects:
        raise NotAllowed(ErrorType.SUBJECT_NOT_ALLOWED,
                         f"subject {ref.name!r} is not allowed on {where} (it serves: "
                         f"{', '.join(a.subjects) or 'nothing'}; see its --subjects)")
