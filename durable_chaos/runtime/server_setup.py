"""What a worker and the starter set up on the server before runs can start: the search attributes runs upsert,
and no leftover of earlier versions. Apart from the worker itself, so that commands which only need this do not
import the worker (the command line starts faster: tests/unit/test_cli_startup.py)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from durable_chaos.contracts import Attr
from durable_chaos.runtime.connect import task_queue as default_task_queue


class SearchAttributesMissing(RuntimeError):
    pass


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the Chaos* search attributes the workflow upserts. Idempotent; returns the names it added."""
    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {k.name: k.indexed_value_type for k in Attr.ALL if k.name not in have.custom_attributes}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as err:
        wanted = " ".join(
            f"--name {name} --type {IndexedValueType.Name(kind).removeprefix('INDEXED_VALUE_TYPE_').title()}"
            for name, kind in missing.items()
        )
        raise SearchAttributesMissing(
            f"cannot register search attributes ({err.status.name if err.status else err}: {err.message}); "
            f"ask an admin to run: temporal operator search-attribute create {wanted}"
        ) from err
    return sorted(missing)


async def retire_reaper_schedule(client: Client, task_queue: str | None = None) -> bool:
    """Delete the reaper Schedule earlier versions installed (a do-nothing run in the web UI's list every minute);
    each fault now has its own guard. Returns whether there was one."""
    try:
        await client.get_schedule_handle(f"chaos-fault-reaper-{task_queue or default_task_queue()}").delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True
