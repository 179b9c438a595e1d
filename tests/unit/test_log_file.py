"""A worker the command line runs in its own process logs to a file, not over the live view
(runtime/log_file.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from durable_chaos.runtime.log_file import worker_log_to

    def fail():
        raise OSError("bind: address already in use")

    with worker_log_to(Path(sys.argv[1])):
        try:
            fail()
        except OSError:
            logging.getLogger("temporalio.activity").warning("restore_fault failed", exc_info=True)
    logging.getLogger("temporalio.activity").warning("after the worker stopped")
""")


def test_a_worker_warning_goes_to_the_log_file_and_not_to_the_terminal(tmp_path):
    log = tmp_path / "state" / "worker.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    written = log.read_text()
    assert "WARNING temporalio.activity: restore_fault failed" in written
    assert "OSError: bind: address already in use" in written and "Traceback" in written
    # Nothing of it on the terminal while the worker ran; afterwards the loggers are as they were (Python's
    # last resort prints a warning nobody handles).
    assert done.stderr == "after the worker stopped\n", done.stderr
