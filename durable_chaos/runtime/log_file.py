"""Where the log of a worker that the command line runs in its own process goes: a file in the state directory.

The live view redraws the terminal several times a second, and every warning the worker logged (a failed attempt's
traceback, once per retry) was printed into it and tore it apart. The view says what is being retried and why
(cli/retries.py); the tracebacks go to this file, which the command line names when it starts the worker.
`python worker.py`, whose terminal is its log, is not affected.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

# The loggers a worker writes to: the SDK's (activities, workflows, the core) and the worker's own.
WORKER_LOGGERS = ("temporalio", "chaos.worker")


@contextlib.contextmanager
def worker_log_to(path: Path) -> Iterator[Path]:
    """While inside, the worker's loggers write to `path` (appended) and not to the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in WORKER_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate))
        logger.addHandler(handler)
        logger.propagate = False  # nothing reaches the root logger, nor Python's last-resort print to stderr
    try:
        yield path
    finally:
        for logger, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
        handler.close()
