"""Where the runner keeps local state (the embedded dev server's database, compose env files, logs, operation
histories). A bottom-layer module: the safety checkers, the activities and the runtime all read it."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    root = os.environ.get("CHAOS_STATE_DIR") or Path(
        os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    ) / "durable-chaos"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
