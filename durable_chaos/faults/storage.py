"""What the storage faults (power-loss, corrupt) share: where a member's data folder is on this host, a record of
what a fault did to each member, and the undo that brings a member back when it cannot start on what its disk holds.

A member that lost writes or holds a damaged file may not start again: a program that checks its files exits on
what it finds (etcd refuses a WAL whose checksum fails, or panics once its leader tells it the log it kept is
short), or hangs on it. "Cannot start" is read from Docker and from the subject's own check (`start_and_watch`):
after the undo started it, the member's container exits before the check finds it healthy, or it is still up and
not healthy WATCH_S later while a peer is (Patroni's PID 1 outlives a PostgreSQL that fails). The undo then repairs
it the subject's own way, if the subject declares one (`Subject.rejoins_empty`: a member whose data folder is
emptied rejoins from its peers, as NATS and Patroni do), or else puts back the file the fault saved before damaging
it. Either is a finding, so it is kept in the member's record and the report says which happened.

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

from durable_chaos.faults.base import Healthy, Target
from durable_chaos.faults.disk import host_dir
from durable_chaos.state import state_dir

# How long a member the undo started is watched, at most, for being healthy: inside the undo activity's 60 s
# (workflows/policy.py), with room for a repair.
WATCH_S = 30.0
# A member whose subject is not asked is watched until this long after its start (etcd panics on a WAL that fails
# its checksum within a second here).
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


class RepairsOnRecord:
    """A storage fault's `Fault.repaired`: what its undo did is in the member's record, where a retried undo, the
    guard and the reaper find it."""

    def repaired(self, t: Target) -> str | None:
        return read_record(t.tag, t.service).get("repair")


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


def settled(c: Container) -> bool:
    """Has the member been up SETTLE_S since it last started? (The watch of a member whose subject is not asked.)"""
    started = c.state.started_at
    return started is None or (datetime.now(timezone.utc) - started).total_seconds() >= SETTLE_S


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


def start_and_watch(targets: list[Target], healthy: Healthy | None, saved: dict[str, tuple[Path, Path]] | None = None,
                    watch_s: float = WATCH_S) -> dict[str, str | None]:
    """Start every member, then watch them together until each is healthy by its subject's own check (`healthy`).
    Together, because a member can only be healthy once enough of its peers are up (a power loss of the whole rack).
    A member cannot start on what its disk holds, and is repaired and started again, when
    - its container exits: at once (etcd refusing a WAL that fails its checksum), or only when it hears from its
      peers (etcd panics at the first heartbeat of a leader that knows it had more of the log);
    - or it is still up and not healthy after `watch_s` while a peer is healthy: it hangs on what it read (a Patroni
      member whose PostgreSQL cannot start, under a PID 1 that stays up), where the cluster around it works. When
      no peer is healthy either, what is down is the cluster, not this member's disk: nothing is repaired, and the
      restore's health check says so.
    Without `healthy` (no subject to ask), a member is watched until SETTLE_S after its own start.

    The repair: its subject's (`t.rejoins_empty`: its data folder emptied), else `saved[service]` (a copy the fault
    saved of a file it damaged, and that file) put back. After a repair the restore's health check, not this watch,
    says whether the member came back. Returns what was done to each member, as the report says it (None: it came
    back as it was). Raises RuntimeError when nothing can bring a member back (the restore retries, and the run says
    the subject never became healthy)."""
    saved = saved or {}
    done: dict[str, str | None] = {t.service: None for t in targets}
    for t in targets:
        t.container.start()  # a member already running is left as it is (and watched too: it may exit yet)
    watched = list(targets)
    deadline = time.monotonic() + watch_s
    back: set[str] = set()
    while watched:
        for t in list(watched):
            t.container.reload()
            if not t.container.state.running:
                why = _said(t.container, f"exit code {t.container.state.exit_code}")
                done[t.service] = _repair_and_start(t, saved.get(t.service), why)
                watched.remove(t)
        if not watched:
            break
        if time.monotonic() > deadline:
            if healthy is not None and back:  # a peer is healthy (`back` holds none of the watched)
                for t in watched:
                    why = _said(t.container, f"up, and not healthy {watch_s:g}s after it was started")
                    t.container.kill("SIGKILL")  # nothing it holds in memory may write over the repair
                    wait_stopped(t.container)
                    done[t.service] = _repair_and_start(t, saved.get(t.service), why)
            break
        back = healthy() if healthy is not None else {t.service for t in watched if settled(t.container)}
        watched = [t for t in watched if t.service not in back]
        if watched:
            time.sleep(0.25)
    return done


def _said(c: Container, what: str) -> str:
    """What Docker says of the member, and its own last words."""
    return what + (f": {words}" if (words := last_words(c)) else "")


def _repair_and_start(t: Target, saved: tuple[Path, Path] | None, why: str) -> str:
    """Repair a stopped member and start it again; returns the report's line."""
    folder = data_folder(t)
    if t.rejoins_empty:
        for child in folder.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        t.container.start()
        return (f"{t.service} could not start on what its disk held ({why}); repaired by its subject's repair: its "
                f"data folder emptied, to rejoin from its peers")
    if saved is not None and saved[0].exists():
        copy, original = saved
        shutil.copy2(copy, original)
        t.container.start()
        return (f"{t.service} could not start on what its disk held ({why}); repaired by putting back the saved "
                f"copy of {original.relative_to(folder)} (its subject declares no repair of its own)")
    raise RuntimeError(f"{t.service} cannot start on what its disk holds ({why}) and its subject declares no "
                       "repair (rejoins_empty)")
