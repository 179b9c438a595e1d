"""What the storage faults (power-loss, corrupt) share: where a member's data folder is on this host, a record of
what a fault did to each member, and the undo that brings a member back when it cannot start on what its disk holds.

A member that lost writes or holds a damaged file may not start again: a program that checks its files exits on
what it finds (etcd refuses a WAL whose checksum fails). "Cannot start" is read from Docker: the member's
container exits within `SETTLE_S` of being started. The undo then repairs it the subject's own way, if the subject
declares one (`Subject.rejoins_empty`: a member whose data folder is emptied rejoins from its peers, as NATS and
Patroni do), or else puts back the file the fault saved before damaging it. Either is a finding, so it is kept in
the member's record and the report says which happened. A member that starts, and is then unhealthy with its
container up (Patroni's PID 1 outlives a PostgreSQL that fails), is not seen here: the restore's health check
fails, and the run says so.

Records live in the state directory, named after the fault's tag and the member, so a retried undo, the guard and
the reaper, on any worker of this host, read the same one.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from python_on_whales import Container, DockerException, docker

from durable_chaos.faults.base import Target
from durable_chaos.faults.disk import host_dir
from durable_chaos.state import state_dir

# Long enough for a member that refuses its files to exit (etcd panics on a bad WAL within a second here), short
# enough not to weigh on every storage fault's time to restore.
SETTLE_S = 3.0
# A plain log line that says why a program stopped: Go's panics, NATS's levels, PostgreSQL's FATAL and PANIC.
FAILED = re.compile(r"\bpanic\b|\bfatal\b|\[FTL\]|\[ERR\]", re.IGNORECASE)


def record_file(tag: str, service: str) -> Path:
    return state_dir() / "storage-faults" / tag / f"{service}.json"


def read_record(tag: str, service: str) -> dict:
    path = record_file(tag, service)
    return json.loads(path.read_text()) if path.exists() else {}


def update_record(tag: str, service: str, **fields) -> dict:
    """The member's record with `fields` set, written whole (a rename: a worker killed mid-write leaves the old)."""
    path = record_file(tag, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**read_record(tag, service), **fields}
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(record))
    scratch.replace(path)
    return record


def data_folder(t: Target) -> Path:
    """The member's data folder as this host sees it: its volume or bind mount (a power-loss layer's mount point
    when the copy runs on layers), else its container's writable layer (only touched while the member is down:
    overlayfs does not define changes made behind a mounted overlay's back)."""
    return host_dir(t.container, t.data_path or "/")[0]


def wait_stopped(c: Container, timeout_s: float = 10.0) -> None:
    """`docker kill` returns when the signal is sent: its files are quiet only once the container has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        c.reload()
        if not c.state.running or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def stays_up(c: Container) -> bool:
    """Does the member stay up until SETTLE_S after it last started? (It exits at once if it refuses what its disk
    holds.) A member up that long already is not watched again: a corrupted member that ran through the detection
    and the diagnosis has started, and its undo takes no longer for the watch."""
    c.reload()
    while c.state.running:
        started = c.state.started_at
        if started is None or (datetime.now(timezone.utc) - started).total_seconds() >= SETTLE_S:
            return True
        time.sleep(0.2)
        c.reload()
    return False


def last_words(c: Container) -> str:
    """Why the member would not start, from the end of its log: the first panic or fatal line there (a Go panic's
    message comes before its goroutine dump), else the first error; of a JSON line (etcd), its level, message and
    error."""
    try:
        lines = docker.container.logs(c, tail=60).strip().splitlines()
    except DockerException:  # a log we cannot read does not stop a repair
        return ""
    found: list[tuple[int, int, str]] = []  # (how bad: 0 a panic or fatal, 1 an error; where; what it says)
    for at, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            level = str(entry.get("level", "")).lower()
            said = " ".join(str(entry[k]) for k in ("level", "msg", "error") if k in entry)
        else:
            level = (m.group(0).strip("[]").lower() if (m := FAILED.search(line)) else "")
            said = line.strip()
        if level in ("panic", "fatal", "ftl", "error", "err"):
            found.append((0 if level in ("panic", "fatal", "ftl") else 1, at, said))
    return (min(found)[2] if found else lines[-1].strip() if lines else "")[:300]


def start_or_repair(t: Target, put_back: Path | None = None, original: Path | None = None,
                    watch: bool = True) -> str | None:
    """Start the member; if it cannot start on what its disk holds, repair it and start it again. The repair: the
    subject's (`t.rejoins_empty`: its data folder emptied), else `put_back` (a saved copy of a file the fault
    damaged) copied over `original`. Returns what was done, as the report says it, or None if it started as it was.
    `watch=False` (nothing was lost: it starts as it did before) skips the watch and its SETTLE_S. After a repair
    the restore's health check, not a second watch, says whether the member came back. Raises RuntimeError when
    nothing can bring it back (the restore retries, and the run says the subject never became healthy)."""
    c = t.container
    c.start()  # a member already running is left as it is (and watched until SETTLE_S after its own start)
    if not watch or stays_up(c):
        return None
    why = f"exit code {c.state.exit_code}" + (f": {words}" if (words := last_words(c)) else "")
    folder = data_folder(t)
    if t.rejoins_empty:
        for child in folder.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        done = (f"{t.service} could not start on what its disk held ({why}); repaired by its subject's repair: its "
                f"data folder emptied, to rejoin from its peers")
    elif put_back is not None and original is not None and put_back.exists():
        shutil.copy2(put_back, original)
        done = (f"{t.service} could not start on what its disk held ({why}); repaired by putting back the saved "
                f"copy of {original.relative_to(folder)} (its subject declares no repair of its own)")
    else:
        raise RuntimeError(f"{t.service} cannot start on what its disk holds ({why}) and its subject declares no "
                           "repair (rejoins_empty)")
    c.start()
    return done
