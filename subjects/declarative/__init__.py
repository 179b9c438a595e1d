"""Subject folders: a user's own system, described in YAML instead of Python.

A folder holds `docker-compose.yaml` and `subject.yaml`. The YAML is validated by `SubjectFile` (its JSON Schema is
published as `subjects/subject.schema.json` and by `python starter.py subjects --schema`), and covers the common
case: services and targets, the port scheme, images, probes of kinds `http`, `tcp` and `exec` (the invariants,
evaluated on every member), a load operation of the same kinds, optional role probes, diagnosis hints, and an
optional `hook: module:Class` (a subclass of `DeclarativeSubject`, loaded from the folder) for anything richer.

Every error names the file and the field, on one line, so `chaos --subject ./x` can exit 2 before touching anything.

By concern: `spec` (the file's model), `folder` (reading and loading a folder), `probes` (one probe against one
member), `session` and `subject`.
"""

from subjects.declarative.folder import load_subject_folder, read_subject_file, subject_name
from subjects.declarative.probes import ProbeFailed
from subjects.declarative.session import DeclarativeSession
from subjects.declarative.spec import COMPOSE_FILE, SUBJECT_FILE, SubjectFile, schema
from subjects.declarative.subject import DeclarativeSubject

__all__ = [
    "COMPOSE_FILE", "SUBJECT_FILE", "DeclarativeSession", "DeclarativeSubject", "ProbeFailed", "SubjectFile",
    "load_subject_folder", "read_subject_file", "schema", "subject_name",
]
