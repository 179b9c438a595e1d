"""Subjects: the systems we break on purpose, as plugins. See `subjects.base` for the interface,
`subjects.registry` for how they are found and `subjects.declarative` for subject folders (YAML, no Python)."""

from subjects.base import (
    BadSubjectFile,
    DiagnosisHints,
    ExecResult,
    FromDebian,
    FromDockerfile,
    FromWheelBinary,
    ImageSpec,
    Members,
    CompareFailed,
    NotApplied,
    Reading,
    Session,
    Subject,
    SubjectInstance,
    UnknownSubject,
)
from subjects.registry import get_subject, known, resolve, subject_ref

__all__ = [
    "BadSubjectFile", "CompareFailed", "DiagnosisHints", "ExecResult", "FromDebian", "FromDockerfile",
    "FromWheelBinary", "ImageSpec", "Members", "NotApplied", "Reading", "Session", "Subject", "SubjectInstance",
    "UnknownSubject", "get_subject", "known", "resolve", "subject_ref",
]
