"""corrupt: one member's newest data file is damaged at rest (bits flipped, or cut short) at seeded offsets, and the
member starts again on it; undone by bringing the member back to health, repaired if it cannot start.

Data on disk rots, and a cluster that trusts a damaged replica can lose what it acknowledged (nats-server#7549: one
bit flip in a minority member's block file). The file is chosen among those its subject declares
(`Subject.data_files`, globs under the member's data path): the one written last. The member is SIGKILLed first, so
that nothing it holds in memory writes over the damage and what it reads at start is what its disk holds; the file
is copied aside (the undo puts it back when the subject has no repair of its own), damaged, and the member started.
The offsets come from a seed (`seed`, else the fault's tag), so a run can be repeated byte for byte on the same
files, and fall where the file holds data (`written_extent`: a preallocated log's zeros past its last record are
skipped by its reader, and damaging them tests nothing). What was changed is kept in the member's record
(`faults/storage.py`): the evidence of effect reads it.

One member at a time, a minority: the experiment is whether the others outvote its damage.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from durable_chaos.contracts import ContainerState
from durable_chaos.faults.base import BadFault, Fault, Healthy, Target
from durable_chaos.faults.storage import (
    RepairsOnRecord,
    data_folder,
    read_record,
    record_file,
    start_and_watch,
    update_record,
    wait_stopped,
)


class CorruptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["bitflip", "truncate"] = Field(default="bitflip", description="flip bits, or cut the file short")
    bits: int = Field(default=8, ge=1, le=4096, description="bits flipped (bitflip), each at its own offset")
    files: str | None = Field(default=None, description="a glob under the member's data path to pick from, instead "
                                                        "of the files its subject declares")
    seed: int | None = Field(default=None, description="the offsets' seed (default: from the fault's tag)")


def written_extent(path: Path, chunk: int = 1 << 20) -> int:
    """How far into the file its data reaches: one past its last non-zero byte (the whole file if it is all zeros).
    Logs are often preallocated (etcd's WAL segments are 64 MB of zeros at first): a flip in the zeros past the last
    record is skipped by the reader as unused space, and tests nothing, so offsets are drawn below this."""
    size = path.stat().st_size
    with path.open("rb") as f:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            block = f.read(end - start).rstrip(b"\0")
            if block:
                return start + len(block)
            end = start
    return size


def damage(path: Path, params: CorruptParams, rng: random.Random) -> dict:
    """Flip `params.bits` bits of the file, or cut it short, at offsets drawn from `rng` below its written extent;
    what was changed, as the record keeps it: {"offsets": [...]} or {"truncated_at": n}."""
    extent = written_extent(path)
    if params.mode == "truncate" or extent == 0:
        at = rng.randrange(extent) if extent else 0
        with path.open("r+b") as f:
            f.truncate(at)
        return {"truncated_at": at}
    # Distinct offsets, a bit each: two flips of one byte could cancel out, and the record names each offset once.
    flips = [(offset, rng.randrange(8)) for offset in sorted(rng.sample(range(extent), min(params.bits, extent)))]
    with path.open("r+b") as f:
        for offset, bit in flips:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << bit)]))
    return {"offsets": [offset for offset, _ in flips]}


def _rng(params: CorruptParams, t: Target) -> random.Random:
    seed = params.seed if params.seed is not None else int(hashlib.sha256(f"{t.tag}/{t.service}".encode())
                                                           .hexdigest()[:12], 16)
    return random.Random(seed)


class Corrupt(RepairsOnRecord, Fault):
    kind = "corrupt"
    help = ("damage the member's newest data file at rest (flip bits, or truncate, at seeded offsets; a copy kept), "
            "then start it on it; undone by bringing it back, repaired if it cannot start")
    Params = CorruptParams
    looks_like = ("a damaged data file: the member was restarted (a short exit 137) and then either refuses to start "
                  "(exits, logging a checksum or a bad record) or runs on the damage, which may show only as its "
                  "data disagreeing with its peers")
    advice = ("Check {who}'s data files against its peers (checksums, its own verify tool); if it cannot start, wipe "
              "its data and let it rejoin from the others, and find what damaged the file (disk, filesystem).")
    out_of_service = False  # it runs on the damage, if it can

    def label(self) -> str:
        p = self.params
        return f"corrupt ({p.bits} bits)" if p.mode == "bitflip" else "corrupt (truncate)"

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        # From outside: a member restarted since the fault began that runs (one that exits reads as down, which
        # every diagnosis names anyway). Whether its files are damaged only its log, or its peers, can tell.
        if not (c.running and c.restarted_since_fault):
            return None
        when = f" at {c.started_at:%H:%M:%S}" if c.started_at else ""
        return (f"{c.service} was restarted after the fault began (container {c.container} started again{when}) "
                "and runs: it may be running on damaged data files")

    def _patterns(self, t: Target) -> tuple[str, ...]:
        return (self.params.files,) if self.params.files else t.data_files

    def _candidates(self, t: Target) -> list[Path]:
        folder = data_folder(t)
        # An empty file has nothing to damage (a segment just created): it is never the one picked.
        found = {p for pattern in self._patterns(t) for p in folder.glob(pattern) if p.is_file() and p.stat().st_size}
        return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            if t.data_path is None:
                return (f"{self.kind}: {t.service} declares no data volume (its subject's data paths): nothing was "
                        "touched")
            if not self._patterns(t):
                return (f"{self.kind}: {t.service}'s subject declares no data files (Subject.data_files); name them "
                        "with -p files=GLOB: nothing was touched")
            if not self._candidates(t):
                return self._matches_nothing(t)
        return None

    def _matches_nothing(self, t: Target, since: str = "") -> str:
        return (f"{self.kind}: {', '.join(self._patterns(t))} matches no file in {t.service}'s data ({t.data_path})"
                f"{since}: nothing was touched")

    def in_effect(self, t: Target) -> bool:
        record = read_record(t.tag, t.service)
        return bool(record.get("changed")) and not record.get("undone")

    def inject(self, t: Target) -> bool:
        record = read_record(t.tag, t.service)
        if record.get("changed"):
            # Damaged once already (a retried activity): start it if the first attempt died before that.
            t.container.reload()
            if not t.container.state.running:
                t.container.start()
            return False
        if not record and not self._candidates(t):  # asked before the kill: a refusal leaves the member as it was
            raise BadFault(self._matches_nothing(t, " any more"))
        if not record.get("killed_at"):
            record = update_record(t.tag, t.service, killed_at=datetime.now(timezone.utc).isoformat())
        t.container.kill("SIGKILL")
        wait_stopped(t.container)
        folder = data_folder(t)
        snapshot = record_file(t.tag, t.service).with_suffix(".snapshot")
        if record.get("file"):
            # A first attempt saved the file and died before it recorded the damage: start again from the copy.
            target = folder / record["file"]
            shutil.copy2(snapshot, target)
        else:
            target = self._candidates(t)[-1]  # the newest, now that nothing writes to them
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, snapshot)
            record = update_record(t.tag, t.service, file=str(target.relative_to(folder)),
                                   size=target.stat().st_size, mode=self.params.mode, snapshot=str(snapshot))
        update_record(t.tag, t.service, changed=damage(target, self.params, _rng(self.params, t)))
        t.container.start()
        return True

    def began_at(self, t: Target) -> datetime | None:
        killed = read_record(t.tag, t.service).get("killed_at")
        return datetime.fromisoformat(killed) if killed else None

    in_effect_since = began_at  # a retried inject: the first attempt's kill

    def undo(self, t: Target) -> bool:
        return self.undo_all([t])[0]

    def undo_all(self, targets: list[Target], healthy: Healthy | None = None) -> list[bool]:
        # Down by now, or about to be (etcd panics once it hears from its leader): started, watched until healthy,
        # and repaired if it cannot start. One that runs on the damage is left so: that is the finding.
        records = {t.service: read_record(t.tag, t.service) for t in targets}
        hit = [t for t in targets if records[t.service].get("changed") and not records[t.service].get("undone")]
        saved = {t.service: (Path(records[t.service]["snapshot"]), data_folder(t) / records[t.service]["file"])
                 for t in hit}
        repairs = start_and_watch(hit, healthy, saved)
        for t in hit:
            update_record(t.tag, t.service, undone=True, repair=repairs[t.service])
            saved[t.service][0].unlink(missing_ok=True)
        return [t.service in repairs for t in targets]

    def evidence_of_effect(self, t: Target) -> str | None:
        record = read_record(t.tag, t.service)
        changed = record.get("changed")
        if not changed:
            return None
        what = (f"cut short at byte {changed['truncated_at']:,} of {record['size']:,}" if "truncated_at" in changed
                else f"{len(changed['offsets'])} bits flipped at offsets "
                     f"{', '.join(f'{o:,}' for o in changed['offsets'][:8])}"
                     + (" ..." if len(changed["offsets"]) > 8 else "") + f" (of {record['size']:,} bytes)")
        return f"{t.service}: {record['file']} {what}; the member was started on it"
