"""The operation history of a run: every client operation the load generator issued, as the client saw it.

One operation is one line of JSON in a gzip-compressed file. Each load window writes its own part and the final read
phase writes one more, all in one folder per run under the state directory, so the full history never enters
Temporal's event history (the load windows, a handful of numbers each, do). `zcat part | jq` reads them.

An `Op` is a plain dataclass, not a pydantic model: a minute of load is thousands of them, and building 6000 from
JSON takes 6 ms as dataclasses and 21 ms as validated models (measured), about what every checker together takes.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from collections.abc import Iterable
from typing import Literal

from durable_chaos.state import state_dir

Kind = Literal["read", "write", "op"]  # "op": a subject's own load operation that says nothing about data
Outcome = Literal["ok", "fail", "info"]  # fail: certainly not applied; info: unknown (e.g. a timeout)
PART_SUFFIX = ".jsonl.gz"
FINAL_PART = "final" + PART_SUFFIX


@dataclass(slots=True)
class Op:
    kind: Kind
    outcome: Outcome
    invoke_ns: int  # epoch nanoseconds: when the load generator meant to send it (open loop)
    complete_ns: int  # when the answer (or the timeout) came; for info ops the truth may land any time later
    key: str | None = None
    value: str | None = None  # write: the value written; read: the value returned (None: the key holds nothing)
    process: int = 0  # the load client slot, which a session uses to pick (and fail over between) members
    token: int | None = None  # what the system returned: etcd revision, NATS stream sequence, Postgres txid
    error: str | None = None
    final: bool = False  # a read of the final read phase, after restore
    capped: bool = False  # not sent: the concurrency cap was hit at its scheduled time (outcome fail)

    @property
    def latency_ms(self) -> float:
        return (self.complete_ns - self.invoke_ns) / 1e6

    def to_json(self) -> str:
        # Defaults are left out: a typical line is then ~100 bytes before compression.
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None and v is not False
                           and not (k == "process" and v == 0)}, separators=(",", ":"))


_FIELDS = {f.name for f in fields(Op)}


def run_dir(workflow_id: str, run_id: str) -> Path:
    """Where one run's history lives (created on demand)."""
    path = state_dir() / "histories" / workflow_id / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_part(path: Path, ops: Iterable[Op]) -> int:
    """Write ops to one part; returns its size in bytes. Written aside and renamed, so a reader never sees half."""
    tmp = path.with_name(path.name + ".tmp")
    # Level 6 compresses a window in a few milliseconds at about a third the size of level 1.
    with gzip.open(tmp, "wt", compresslevel=6) as f:
        for op in ops:
            f.write(op.to_json() + "\n")
    tmp.replace(path)
    return path.stat().st_size


def read_part(path: Path) -> list[Op]:
    with gzip.open(path, "rt") as f:
        return [Op(**{k: v for k, v in json.loads(line).items() if k in _FIELDS}) for line in f if line.strip()]


def parts(folder: Path) -> list[Path]:
    """The load windows' parts in time order (their names are their start times), the final read last."""
    windows = sorted(p for p in folder.glob("*" + PART_SUFFIX) if p.name != FINAL_PART)
    final = folder / FINAL_PART
    return windows + ([final] if final.exists() else [])


def read_history(folder: Path) -> list[Op]:
    """Every op of a run, ordered by invoke time."""
    ops = [op for path in parts(folder) for op in read_part(path)]
    ops.sort(key=lambda op: op.invoke_ns)
    return ops


def size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in parts(folder))
