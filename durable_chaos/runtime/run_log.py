"""One line per chaos run in the worker's terminal when it starts, one when it ends, so a busy worker looks busy.

Written by a workflow interceptor through the SDK's replay-aware logger adapter: the lines come from workflow code,
which must do no I/O of its own, and a run replayed by another worker (after a crash) does not announce its start
again. Only `worker.py` shows them (`show_in_terminal`); elsewhere the logger has no handler and they go nowhere.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError, is_cancelled_exception
from temporalio.worker import ExecuteWorkflowInput, Interceptor, WorkflowInboundInterceptor, WorkflowInterceptorClassInput

with workflow.unsafe.imports_passed_through():
    from durable_chaos.contracts import WORKFLOW_NAME, ChaosInput, ChaosReport, report_of_failure

RUNS_LOGGER = logging.getLogger("durable_chaos.runs")
_log = workflow.LoggerAdapter(RUNS_LOGGER, None)
_log.workflow_info_on_message = False  # the line names the run itself; the SDK's dict of ids would double it


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


class _RunLines(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        if info.workflow_type != WORKFLOW_NAME or not input.args or not isinstance(input.args[0], ChaosInput):
            return await super().execute_workflow(input)
        run = info.workflow_id
        _log.info("%s started: %s", run, input.args[0].summary())
        try:
            report: ChaosReport = await super().execute_workflow(input)
        except BaseException as err:
            # Only endings of the run itself: an eviction from the worker's cache or a bug that retries the
            # workflow task is not one. A fail verdict ends the run failed, with its report.
            if (failed := report_of_failure(err)) is not None:
                _log_report(run, failed)
            elif is_cancelled_exception(err):
                _log.info("%s ended: cancelled (the fault, if injected, is restored first)", run)
            elif isinstance(err, FailureError):
                _log.info("%s ended: failed: %s", run, err)
            raise
        _log_report(run, report)
        return report


def _log_report(run: str, report: ChaosReport) -> None:
    _log.info("%s ended: verdict %s, %s %s, TTD %s, TTR %s", run, report.verdict, report.fault, report.target or "-",
              _seconds(report.time_to_detect_s), _seconds(report.time_to_restore_s))


class RunLog(Interceptor):
    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _RunLines


def show_in_terminal() -> None:
    """Print the run lines on stdout, with the time, as `python worker.py` does."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    RUNS_LOGGER.addHandler(handler)
    RUNS_LOGGER.setLevel(logging.INFO)
    RUNS_LOGGER.propagate = False
