"""Docker hosts by name: what a valid name is, and the name of the host this machine's engine is by default.

A host is a task queue (durable_chaos/ids.py): a worker per Docker host polls its host's queue, and every activity
that touches a subject runs there. Without `--host`, the host is named after this machine, so a run started here
goes to a worker started here, as before hosts existed.
"""

from __future__ import annotations

import os
import re
import socket

HOST_ENV = "CHAOS_HOST"
# Part of a task queue name and a workflow id, typed on command lines: letters, digits, and - _ . inside.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")


def check_host_name(name: str) -> str:
    """`name` if it can name a host, else ValueError in one line."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"host name {name!r} is not valid: use 1-63 letters, digits, '-', '_' or '.', starting and "
                         f"ending with a letter or digit")
    return name


def default_host() -> str:
    """This machine's host name (CHAOS_HOST overrides it), made valid: what `worker.py` and `chaos` use without
    `--host`."""
    configured = os.environ.get(HOST_ENV)
    if configured:
        return check_host_name(configured)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]).strip("-_.")[:63] or "localhost"
    return check_host_name(name)
