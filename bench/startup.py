"""What a run pays before it does anything, each beside its baseline measured in the same benchmark run (CPU only,
measured before any cluster loads the machine):

- the command line: `python starter.py --help` as a whole process (wall time, CPU, peak RSS), beside
  `python -c pass`, the interpreter alone;
- workflow code: replaying each recorded run of this release (tests/histories) as the worker runs workflow code
  (without Temporal's sandbox since session 25), CPU ms per replay, beside the sandbox as it was before (our
  `workflows` package and `rich` passed through). A replay creates the workflow instance, as a worker does for every
  new run and every run it takes back after its cache dropped it, and runs every workflow task of the run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from bench.tools import ensure_tool
from durable_chaos.runtime.worker import RUNNER, WORKFLOWS
from workflows.compat import RELEASE

REPO = Path(__file__).resolve().parents[1]
HISTORIES = REPO / "tests" / "histories" / RELEASE


def _process(argv: list[str], runs: int) -> dict:
    """Wall p50, CPU p50 (user + system) and the peak RSS of `argv` run `runs` times, as GNU time reads them (our
    own rusage would count the fork of this large process before the exec as the child's peak)."""
    time_cmd = ensure_tool("time")
    walls, cpus, rss = [], [], 0.0
    with tempfile.NamedTemporaryFile("r") as out:
        for _ in range(runs):
            subprocess.run([time_cmd, "-o", out.name, "-f", "%e %U %S %M", *argv], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            wall, user, system, kb = out.read().split()[-4:]
            out.seek(0)
            walls.append(float(wall))
            cpus.append(float(user) + float(system))
            rss = max(rss, int(kb) / 1024)
    return {"wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3),
            "peak_rss_mb": round(rss, 1)}


def cli_figures(runs: int = 5) -> dict:
    help_ = _process([sys.executable, "starter.py", "--help"], runs)
    bare = _process([sys.executable, "-c", "pass"], runs)
    return {"runs": runs, "starter_help": help_, "python_alone": bare,
            "help_over_python_s": round(help_["wall_s"] - bare["wall_s"], 3)}


async def _replay_cpu_ms(runner, histories: list[Path], rounds: int) -> float:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=runner)
    loaded = [WorkflowHistory.from_json(f"record-{p.stem}", p.read_text()) for p in histories]
    for h in loaded:  # warm: the passed-through modules are imported once, as in a worker that has run before
        await replayer.replay_workflow(h)
    began = time.process_time()
    for _ in range(rounds):
        for h in loaded:
            await replayer.replay_workflow(h)
    return round(1000 * (time.process_time() - began) / (rounds * len(loaded)), 1)


async def sandbox_figures(rounds: int = 10) -> dict:
    histories = sorted(HISTORIES.glob("*.json"))
    before = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("rich",
                                                                                                      "workflows"))
    product = await _replay_cpu_ms(RUNNER, histories, rounds)
    baseline = await _replay_cpu_ms(before, histories, rounds)
    return {"histories": len(histories), "rounds": rounds, "cpu_ms_per_replay": product,
            "cpu_ms_per_replay_in_sandbox": baseline,
            "ratio": round(product / baseline, 3) if baseline else None}
