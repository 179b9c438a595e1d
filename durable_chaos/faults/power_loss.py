"""power-loss: the member's machine loses power. Its container is SIGKILLed, then every write it had not fsynced is
dropped; undone by starting it again, on what its disk held (repaired the subject's way if it cannot start there:
faults/storage.py).

A kill alone loses nothing the kernel already took (the page cache outlives the process), so it cannot show an
acknowledgement sent before the fsync. Here the member's data runs on a power-loss layer (`faults/powerfs`) that
holds every un-synced write apart: a run that asks for a storage fault has the subject copy's members brought up on
layers in preflight (with fresh data), and `drop` forgets what the layer held. Several members at once (every one,
with --allow-quorum-loss) is a power loss of the whole rack.
"""

from __future__ import annotations

import json

from python_on_whales import Container

from durable_chaos.contracts import ContainerState
from durable_chaos.docker_engine import PROJECT_LABEL
from durable_chaos.faults.base import Healthy, Target
from durable_chaos.faults.container import _Down
from durable_chaos.faults.powerfs import Layer, lost_record, on_layers, powerfs_image
from durable_chaos.faults.storage import RepairsOnRecord, start_and_watch, update_record
from durable_chaos.images import ImageSpec


def _project(c: Container) -> str:
    return (c.config.labels or {}).get(PROJECT_LABEL, "")


def layer_of(t: Target) -> Layer:
    return Layer(_project(t.container), t.service)


class PowerLoss(RepairsOnRecord, _Down):
    kind = "power-loss"
    help = ("the member loses power: SIGKILL, then every write it had not fsynced is dropped (its data runs on a "
            "layer that keeps them apart, put in place in preflight with fresh data); undone by starting it")
    looks_like = ("power lost: the container is not running and exited with code 137 (SIGKILL), as a kill; back up, "
                  "the member has only what it had fsynced, and may have lost writes it had acknowledged")
    advice = ("Start {who} again, then check it kept every write it acknowledged: a write acknowledged before it was "
              "fsynced is lost in a power loss (look for a sync interval, and whether the member rejoined from its "
              "peers or from its own damaged disk).")
    # The layer is the run's: preflight puts the copy's members on it (activities/docker.py `storage_for`).
    needs_storage_layer = True

    def images(self) -> list[ImageSpec]:
        return [powerfs_image()]

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        # From outside it looks like a kill (exit 137), whose signature names it; what tells them apart is on the
        # layer, and the fault's evidence of effect reports it (the bytes dropped).
        return None

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            if t.data_path is None:
                return (f"{self.kind}: {t.service} declares no data volume (its subject's data paths): nothing was "
                        "injected")
            if not on_layers(_project(t.container)):
                return f"{self.kind}: {t.service}'s data is not on a power-loss layer: nothing was injected"
        return None

    def inject(self, t: Target) -> bool:
        # Two halves, each done once: a retried inject that finds the member down still drops what its layer holds,
        # unless this fault's drop is on record.
        layer = layer_of(t)
        killed = super().inject(t)
        record = lost_record(layer, t.tag)
        if record.exists():
            return killed
        lost = layer.ask("drop")
        record.write_text(json.dumps(lost))
        return True

    def _inject(self, t: Target) -> None:
        t.container.kill("SIGKILL")

    def _undo(self, t: Target) -> None:
        self._come_back([t], None)

    def undo_all(self, targets: list[Target], healthy: Healthy | None = None) -> list[bool]:
        down = [self.in_effect(t) for t in targets]
        self._come_back([t for t, d in zip(targets, down) if d], healthy)
        return down

    def _come_back(self, down: list[Target], healthy: Healthy | None) -> None:
        # A member may not start on what its disk kept: then its subject's repair (faults/storage.py). One that lost
        # nothing starts as before, unwatched: its time to restore does not wait on its peers' health.
        lost = {}
        for t in down:
            record = lost_record(layer_of(t), t.tag)
            lost[t.service] = json.loads(record.read_text())["bytes"] if record.exists() else 1
        for t in down:
            if not lost[t.service]:
                t.container.start()
        repairs = start_and_watch([t for t in down if lost[t.service]], healthy)
        for t in down:
            update_record(t.tag, t.service, repair=repairs.get(t.service))

    def evidence_of_effect(self, t: Target) -> str | None:
        record = lost_record(layer_of(t), t.tag)
        if not record.exists():
            return None
        lost = json.loads(record.read_text())
        if not lost["bytes"]:
            return f"{t.service}: power lost; nothing was waiting for an fsync (every write had been synced)"
        return (f"{t.service}: power lost; {lost['bytes']} bytes written to {lost['files']} files and not fsynced "
                "were dropped")
