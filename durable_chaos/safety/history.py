"""The operation history of a run: every client operation the load generator issued, as the client saw it.

A history is JSON lines in Jepsen's shape (jepsen.py, docs/history-format.md), gzip-compressed, one file per part:
each load window writes its own part and the final phase writes one more (with the fault windows, as nemesis
lines), all in one folder per run under the state directory, so the full history never enters Temporal's event
history (the load windows, a handful of numbers each, do). `zcat part | jq` reads them, and
`python starter.py check` checks them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from durable_chaos.safety import jepsen
from durable_chaos.safety.op import Op
from durable_chaos.state import state_dir

__all__ = ["CHECKED_AS", "FINAL_PART", "PART_SUFFIX", "CheckedAs", "Op", "parts", "read_checked_as", "read_history",
           "read_part", "run_dir", "size_bytes", "write_checked_as", "write_part"]

PART_SUFFIX = ".jsonl.gz"
SENDING_SUFFIX = ".sending"  # mark_sending
FINAL_PART = "final" + PART_SUFFIX
CHECKED_AS = "checked-as.json"


@dataclass(frozen=True)
class CheckedAs:
    """How the run checked its history: what its subject's session said of the data (`subjects.base.Session`).
    Kept beside the parts, so `starter.py check FOLDER` judges the history as the run did without being told."""

    model: str | None
    isolation: str | None = None
    token_name: str | None = None
    gapless: bool = False
    keeps_delivered: bool = False


def write_checked_as(folder: Path, how: CheckedAs) -> None:
    (folder / CHECKED_AS).write_text(json.dumps(asdict(how), indent=2) + "\n")


def read_checked_as(folder: Path) -> CheckedAs | None:
    """The folder's record, None when it has none (a history of another tool's, or a run from before the record).
    Raises ValueError for a record that is not one."""
    path = folder / CHECKED_AS
    if not path.exists():
        return None
    try:
        return CheckedAs(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a record of how its run checked it ({err})") from err


def run_dir(workflow_id: str, run_id: str) -> Path:
    """Where one run's history lives (created on demand)."""
    path = state_dir() / "histories" / workflow_id / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_part(path: Path, ops: Iterable[Op], faults: Iterable[jepsen.FaultWindow] = ()) -> int:
    """Write ops (and fault windows) to one part; returns its size in bytes. Written aside and renamed, so a reader
    never sees half."""
    tmp = path.with_name(path.name + ".tmp")
    # Level 6 compresses a window in a few milliseconds at about a third the size of level 1.
    with gzip.open(tmp, "wt", compresslevel=6) as f:
        for line in jepsen.lines_of(ops, faults):
            f.write(line + "\n")
    tmp.replace(path)
    return path.stat().st_size


def read_part(path: Path) -> jepsen.History:
    """One part's operations and fault windows. Each part is a whole history of its own: a window's operations all
    complete within it, and the next window's may begin before its last answers (catch-up), so parts are paired
    one by one, never merged line by line."""
    with gzip.open(path, "rt") as f:
        return jepsen.parse(f)


def parts(folder: Path) -> list[Path]:
    """The load windows' parts in time order (their names are their start times, then the attempt), the final
    read last."""
    windows = sorted(p for p in folder.glob("*" + PART_SUFFIX) if p.name != FINAL_PART)
    final = folder / FINAL_PART
    return windows + ([final] if final.exists() else [])


def mark_sending(part: Path) -> None:
    """Say, before a window's attempt sends its first operation, that its part is due. An attempt cut off while
    sending (timed out on a starved worker, then cancelled there) may leave no part although its operations landed;
    its mark is what tells the check. The mark is an empty file beside where the part will be."""
    part.with_name(part.name.removesuffix(PART_SUFFIX) + SENDING_SUFFIX).touch()


def attempts_expected(folder: Path, windows: int) -> int:
    """How many load window parts a complete history holds: one per window the workflow saw, one more for each
    attempt a retried window had before (a part of attempt k says k-1 ran before it: the one lost with its worker
    wrote none, and its operations may have landed), and at least one per attempt that began sending. Counts alone
    are not enough: a timed-out attempt that still wrote its part late makes up for a later one that wrote none."""
    def attempt(part: Path) -> int:
        tail = part.name.removesuffix(PART_SUFFIX).rpartition("-")[2]
        return int(tail) if tail.isdigit() else 1
    found = [p for p in parts(folder) if p.name != FINAL_PART]
    return max(windows + sum(attempt(p) - 1 for p in found), len(found) + len(cut_off_attempts(folder)))


def cut_off_attempts(folder: Path) -> list[str]:
    """The window attempts (`<start ns>-<attempt>`) that began sending and left no part (mark_sending)."""
    written = {p.name.removesuffix(PART_SUFFIX) for p in folder.glob("*" + PART_SUFFIX)}
    return sorted(name for m in folder.glob("*" + SENDING_SUFFIX)
                  if (name := m.name.removesuffix(SENDING_SUFFIX)) not in written)


def read_history(folder: Path, read: Callable[[Path], jepsen.History] = read_part) -> jepsen.History:
    """Every op of a run, ordered by invoke time, and its fault windows. `read` reads one part (`check` passes one
    that holds the lines to a model and names a bad part)."""
    whole = jepsen.History()
    for path in parts(folder):
        part = read(path)
        whole.ops += part.ops
        whole.faults += part.faults
    whole.ops.sort(key=lambda op: op.invoke_ns)
    return whole


def size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in parts(folder))
