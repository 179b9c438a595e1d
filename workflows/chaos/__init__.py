"""The chaos run, as a package: `workflow.py` reads like the run's diagram and each concern has a module of its own.

    plan.py        which members the run hits, drawn once in workflow code
    stages.py      each stage one activity call, options from workflows/policy.py
    background.py  the load, the guardrails and the user's detectors, alongside the experiment
    supervise.py   cut short on abort, deadline or a stop condition; the compensation shielded from cancellation
    view.py        progress query, search attributes, current details and memo
    verdict.py     the verdict, reasons and report: pure functions of the record (state.py)
"""

from workflows.chaos.workflow import ChaosDemoWorkflow

__all__ = ["ChaosDemoWorkflow"]
