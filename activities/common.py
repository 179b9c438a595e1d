"""What every activity does first: turn the request's subject and fault into objects, refusing what this worker
cannot know as bad input (nothing is touched). Shared by the activity modules, so none of them reaches into
another's stage for it."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from durable_chaos import admission
from durable_chaos.contracts import SubjectRef, bad_input
from durable_chaos.faults import BadFault, Fault, make_fault
from subjects import BadSubjectFile, SubjectInstance, UnknownSubject, resolve


def resolve_or_bad_input(ref: SubjectRef) -> SubjectInstance:
    """The run's subject on this worker; one that this worker does not know or does not serve (admission.py) is
    bad input (nothing is touched)."""
    try:
        admission.check(ref)
    except admission.NotAllowed as exc:
        raise ApplicationError(str(exc), type=exc.kind, non_retryable=True,
                               category=ApplicationErrorCategory.BENIGN) from exc
    try:
        return resolve(ref)
    except (UnknownSubject, BadSubjectFile) as exc:
        raise bad_input(str(exc)) from exc


def fault_or_bad_input(kind: str, params: dict) -> Fault:
    try:
        return make_fault(kind, params)
    except BadFault as exc:
        raise bad_input(str(exc)) from exc
