"""The SDK's core (Rust) writes its warnings on stdout unless told otherwise. `starter.py chaos --json` runs an
embedded worker in its own process, so one such warning (CI31: "Failing workflow task", or a task another worker
completed first) lands in front of the JSON a pipeline parses. Every client our code connects must send them to
stderr through Python's logging instead."""

from __future__ import annotations

import sys
import textwrap

from tests.conftest import ROOT, run_command

# A worker connected the way worker.py and starter.py connect, running a workflow whose task fails: core logs
# "Failing workflow task" at WARN for it. It ends the way they end.
SCRIPT = textwrap.dedent("""
    import asyncio, uuid
    from temporalio import workflow
    from temporalio.worker import Worker
    from durable_chaos.runtime.connect import connect, exit_process

    @workflow.defn(sandboxed=False)
    class TaskFails:
        @workflow.run
        async def run(self) -> None:
            raise RuntimeError("this workflow task fails on purpose")

    async def main():
        client = await connect()
        queue = f"core-logs-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=queue, workflows=[TaskFails]):
            handle = await client.start_workflow(TaskFails.run, id=queue, task_queue=queue)
            await asyncio.sleep(2)
            await handle.terminate()
        print('{"clean": true}')

    asyncio.run(main())
    exit_process(0)  # as starter.py and worker.py end: the SDK's threads can abort a finalizing interpreter
""")


def test_core_warnings_go_to_stderr_not_into_stdout(client):
    env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "PYTHONPATH": str(ROOT),
           "PATH": "/usr/bin:/bin", "HOME": "/root"}
    done = run_command([sys.executable, "-c", SCRIPT], env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"clean": true}\n', done.stdout  # stdout stays the program's own output
    assert "Failing workflow task" in done.stderr, done.stderr  # and the warning is still shown, on stderr
