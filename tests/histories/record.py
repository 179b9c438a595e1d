"""Record event histories of real runs for the replay tests: `python -m tests.histories.record`.

Re-record after an *intended* change to workflow code; an unintended one is exactly what the replay tests catch.
They are written to the folder of the current release (workflows/compat.py's RELEASE); the previous release's
folder stays, and older ones are retired (the patch policy, docs/patches.md).
Runs against a private dev server and a private etcd copy, both torn down at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from durable_chaos.contracts import Attr, ChaosInput, ExternalDetector, Step, StopConditions, SubjectRef
from durable_chaos.ids import fault_guard_id
from durable_chaos.runtime.copies import SubjectCopy, free_port_base
from durable_chaos.runtime.devserver import temporal_binary
from durable_chaos.runtime.worker import build_worker
from tests.conftest import walk_to_gate
from tests.fake_monitoring import FakeMonitoring
from workflows.chaos import ChaosDemoWorkflow
from workflows.compat import RELEASE
from workflows.scheduled import ScheduledChaosWorkflow

HERE = Path(__file__).parent / RELEASE


async def main() -> None:
    HERE.mkdir(exist_ok=True)
    copy = SubjectCopy(SubjectRef(name="etcd", project=f"rec-{uuid.uuid4().hex[:6]}", port_base=free_port_base()))
    await asyncio.to_thread(copy.up)
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary(),
                                                data_converter=pydantic_data_converter, search_attributes=list(Attr.ALL))
    queue = "record"
    monitoring = FakeMonitoring().__enter__()
    monitoring.firing.add("EtcdMemberDown")  # their alert fires as soon as it is asked after the fault
    scenarios = {
        "pass": (ChaosInput(subject=copy.ref, countdown_s=3), None),
        "abort_at_detect": (ChaosInput(subject=copy.ref, countdown_s=1, interactive=True),
                            lambda h: h.execute_update(ChaosDemoWorkflow.abort, "recorded abort")),
        "deadline_at_detect": (ChaosInput(subject=copy.ref, countdown_s=1, interactive=True, max_fault_s=2), None),
        "cancel_at_detect": (ChaosInput(subject=copy.ref, countdown_s=1, interactive=True), lambda h: h.cancel()),
        "terminate_at_detect": (ChaosInput(subject=copy.ref, countdown_s=1, interactive=True),
                                lambda h: h.terminate(reason="recorded terminate")),
        # The fault catalog: a network kind with parameters, a role target, two members at once.
        "partition_leader": (ChaosInput(subject=copy.ref, countdown_s=1, fault="partition", target="leader"), None),
        "loss_two_members": (ChaosInput(subject=copy.ref, countdown_s=1, fault="loss", fault_params={"percent": 50},
                                        count=2, allow_quorum_loss=True), None),
        # Guardrails: a stop condition trips while held at detect (the kill's errors); the user's alert is timed
        # beside our probe; the end-of-run webhook starts its notifier.
        "stopped_error_rate": (ChaosInput(subject=copy.ref, countdown_s=1, interactive=True,
                                          stop=StopConditions(max_error_rate_pct=0)), None),
        "their_alert": (ChaosInput(subject=copy.ref, countdown_s=1, detectors=[
            ExternalDetector(kind="alert", alert="EtcdMemberDown", url=monitoring.url)]), None),
        "notify": (ChaosInput(subject=copy.ref, countdown_s=1, notify_url=f"{monitoring.url}/hook"), None),
        # Steps: a held fault, a wait until steady, two lanes side by side, a seeded random schedule.
        "steps": (ChaosInput(subject=copy.ref, countdown_s=1, steps=[Step.model_validate(s) for s in (
            {"fault": {"fault": "partition", "target": "leader", "duration_s": 3}}, {"until_steady": True},
            {"lanes": [[{"fault": {"fault": "pause", "target": "follower", "duration_s": 2,
                                   "allow_quorum_loss": True}}],
                       [{"wait_s": 0.5}, {"fault": {"fault": "loss", "params": {"percent": 30}, "target": "follower",
                                                    "duration_s": 2}}]]},
            {"random": {"duration_s": 4, "kinds": ["pause"], "every_s": 2, "hold_s": 1, "seed": 5}})]), None),
        # A fault that does nothing (a cap far above the traffic): inconclusive.
        "no_effect": (ChaosInput(subject=copy.ref, countdown_s=1, fault="bandwidth", fault_params={"rate": "10gbit"},
                                 detect_timeout_s=3), None),
    }
    try:
        await copy.wait_healthy()
        async with build_worker(env.client, task_queue=queue):
            for name, (inp, action) in scenarios.items():
                handle = await env.client.start_workflow(ChaosDemoWorkflow.run, inp, id=f"record-{name}",
                                                         task_queue=queue)
                if inp.interactive:
                    await walk_to_gate(handle, "detect")
                    if action is not None:
                        await action(handle)
                try:
                    await handle.result()
                except Exception:  # a cancelled run ends in a failure; its history is what we want
                    pass
                history = await handle.fetch_history()
                (HERE / f"{name}.json").write_text(history.to_json())
                print(f"recorded {name}: {len(history.events)} events")
                if name == "terminate_at_detect":  # its guard restores what the terminated run left
                    guard = env.client.get_workflow_handle(fault_guard_id(handle.id, handle.result_run_id))
                    await guard.result()
                    history = await guard.fetch_history()
                    (HERE / "guard_after_terminate.json").write_text(history.to_json())
                    print(f"recorded guard_after_terminate: {len(history.events)} events")
                await copy.wait_healthy()
            # What a schedule starts: the parent that takes the subject's lock id for its child chaos run.
            handle = await env.client.start_workflow(ScheduledChaosWorkflow.run, ChaosInput(subject=copy.ref,
                                                     countdown_s=1), id="record-scheduled", task_queue=queue)
            await handle.result()
            history = await handle.fetch_history()
            (HERE / "scheduled.json").write_text(history.to_json())
            print(f"recorded scheduled: {len(history.events)} events")
    finally:
        monitoring.__exit__()
        await env.shutdown()
        await asyncio.to_thread(copy.down)


if __name__ == "__main__":
    asyncio.run(main())
