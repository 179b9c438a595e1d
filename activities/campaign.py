"""The scorecard's memory: the campaign's previous completed run, read back from Temporal itself (visibility finds
it, its workflow result is its report). No database of our own: the history is the record."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from durable_chaos.contracts import Attr
from durable_chaos.contracts.campaign import CAMPAIGN_WORKFLOW_NAME, CampaignReport, PreviousCampaignRequest


def previous_query(req: PreviousCampaignRequest) -> str:
    # "The same campaign" is the same name (a search attribute: a schedule's runs have ids of their own); the task
    # queue keeps a staging worker's runs from being compared with production's. Only completed runs have a report.
    return (f'WorkflowType="{CAMPAIGN_WORKFLOW_NAME}" AND {Attr.CAMPAIGN.name}="{req.name}" '
            f'AND TaskQueue="{req.task_queue}" AND ExecutionStatus="Completed"')


@activity.defn
async def previous_campaign_report(req: PreviousCampaignRequest) -> CampaignReport | None:
    """The report of the newest completed run of this campaign before this one, or None (its first run)."""
    client = activity.client()
    async for wf in client.list_workflows(previous_query(req), limit=5):  # newest first
        if wf.run_id == req.run_id:
            continue
        try:
            handle = client.get_workflow_handle(wf.id, run_id=wf.run_id, result_type=CampaignReport)
            return await handle.result(follow_runs=False)
        except (WorkflowFailureError, RPCError) as err:  # deleted meanwhile, or not a report: say so, go on
            activity.logger.warning("campaign run %s has no readable report: %s", wf.run_id, err)
    return None
