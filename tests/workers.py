"""Workers as separate processes (`python worker.py`), so tests can SIGKILL them like a real crash."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, command_env


class WorkerProcess:
    def __init__(self, address: str, task_queue: str, state_dir: Path, python_args: list[str] | None = None,
                 **extra_env: str):
        """`python_args`: what the interpreter runs instead of worker.py; `extra_env`: the worker's settings."""
        env = command_env(address, state_dir, CHAOS_TASK_QUEUE=task_queue, PYTHONUNBUFFERED="1", **extra_env)
        self.log = state_dir / f"worker-{time.monotonic_ns()}.log"
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, *(python_args or [str(ROOT / "worker.py")])], cwd=ROOT,
                                     env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> "WorkerProcess":
        deadline = time.monotonic() + timeout
        while "worker polling" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def sigkill(self) -> float:
        """Kill -9: no cleanup, no graceful shutdown. Returns the wall-clock time of the kill."""
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return at

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
