"""NotifyWorkflow: tell a webhook how a chaos run ended, without the run waiting for it.

A chaos run starts one, ABANDONed, right after it built its report, and returns at once. Why a child workflow and
not an activity of the run: the run's result is what `chaos`, a CI gate and a schedule's parent wait for, and a
receiver that is down (a chat outage, a wrong port) must not hold it; bounding an in-run activity tight enough for
that (a few seconds) would drop the message on any outage longer than that. A child of its own retries with backoff
for minutes, never touches the verdict (the report is final before it starts), and shows up in the web UI as its
own run, failed if a receiver never took the message.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy


with workflow.unsafe.imports_passed_through():
    from activities.notify import POST_TIMEOUT_S, post_notice, where
    from durable_chaos.contracts import (
        NOTIFY_WORKFLOW_NAME,
        WORKFLOW_TASK_TIMEOUT,
        ChaosReport,
        NotifyPost,
        NotifyRequest,
        RunNotice,
    )
    from durable_chaos.ids import notify_id

# Backoff 1, 2, 4, ... 60 s; 8 attempts span about 4 minutes: long enough for a receiver's restart, bounded so a
# receiver that is gone for good fails the notification (visibly) instead of retrying forever.
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2,
                           maximum_interval=timedelta(seconds=60), maximum_attempts=8)
NOTIFY_WITHIN = timedelta(minutes=10)


def notice_of(r: ChaosReport) -> RunNotice:
    """The report's headline as a chat shows it, and its figures for a machine (no windows, no history)."""
    safety = r.safety.verdict if r.safety else None
    text = (f"chaos run {r.verdict.upper()}: {r.fault_text} (subject {r.subject}), detected in "
            f"{_seconds(r.time_to_detect_s)}, restored in {_seconds(r.time_to_restore_s)}, data safety "
            f"{safety or '-'}\nrun {r.workflow_id} ({r.run_id})")
    return RunNotice(text=text, workflow_id=r.workflow_id, run_id=r.run_id, subject=r.subject, project=r.project,
                     fault=r.fault, fault_label=r.fault_label, targets=r.targets or [r.target], verdict=r.verdict,
                     time_to_detect_s=r.time_to_detect_s, time_to_restore_s=r.time_to_restore_s, safety=safety,
                     diagnosis_correct=r.diagnosis.correct if r.diagnosis else None, reasons=r.reasons,
                     started_at=r.started_at, finished_at=r.finished_at)


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


async def notify_run_end(report: ChaosReport, url: str | None, worker_url: bool) -> None:
    """Called by a chaos run once its report is built: start the notifications and return (they outlive the run)."""
    if not (url or worker_url):
        return
    info = workflow.info()
    try:
        await workflow.start_child_workflow(
            NOTIFY_WORKFLOW_NAME, NotifyRequest(notice=notice_of(report), urls=[url] if url else [],
                                                worker_url=worker_url),
            id=notify_id(info.workflow_id, info.run_id), parent_close_policy=ParentClosePolicy.ABANDON,
            task_timeout=WORKFLOW_TASK_TIMEOUT, static_summary=f"notify: {report.verdict} of {info.workflow_id}",
        )
    except Exception as err:  # a notification is never worth failing a finished run for
        workflow.logger.warning("could not start the notifications of %s: %s", info.workflow_id, err)


@workflow.defn(name=NOTIFY_WORKFLOW_NAME)
class NotifyWorkflow:
    @workflow.run
    async def run(self, req: NotifyRequest) -> list[int]:
        posts = [NotifyPost(notice=req.notice, url=u) for u in req.urls]
        if req.worker_url:
            posts.append(NotifyPost(notice=req.notice, url=None))
        results = await asyncio.gather(*(workflow.execute_activity(
            post_notice, post, start_to_close_timeout=timedelta(seconds=POST_TIMEOUT_S + 5),
            schedule_to_close_timeout=NOTIFY_WITHIN, retry_policy=NOTIFY_RETRY,
            summary=f"POST to {where(post.url) if post.url else 'the worker CHAOS_NOTIFY_URL'}",
        ) for post in posts), return_exceptions=True)
        failed = [f"{where(p.url) if p.url else 'CHAOS_NOTIFY_URL'}: {r.cause or r}"
                  for p, r in zip(posts, results) if isinstance(r, ActivityError)]
        if failed:
            raise ApplicationError(f"not delivered: {'; '.join(failed)}", non_retryable=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        workflow.set_current_details(f"delivered to {len(posts)} receiver(s): {req.notice.text}")
        return results
