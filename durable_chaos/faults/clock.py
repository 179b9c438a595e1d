"""clock-skew: shift one member's wall clock by an offset, through libfaketime.

libfaketime must be preloaded from the start of the member's processes it shifts, so the subject's image carries
it: LD_PRELOAD for every process, or a wrapper that preloads it into the programs named by CHAOS_FAKETIME_PROGRAMS
(the postgres image: PostgreSQL alone), with FAKETIME_TIMESTAMP_FILE naming a file that holds the offset, "+0" when
no fault is on. The subject declares that file per member (`Subject.clock_files`). The fault only rewrites that
file; libfaketime re-reads it within its cache duration (1 s in the shipped image). The shifted programs' monotonic
clock jumps with it, once (see docs/fault-kinds.md).

Members whose programs libfaketime cannot reach are refused in preflight, never "skewed" in name only: Go programs
(etcd, NATS) read the clock through the vDSO without libc, and time namespaces do not virtualise CLOCK_REALTIME.

The file is read and written with `docker cp`, which works on a stopped container too: a member stopped while
skewed is put right by undo, and would otherwise start again with the offset (the file lives in its writable
layer, which survives a restart). Nothing is named after the run: the offset file is the member's one state.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from python_on_whales import Container, DockerException, docker

from durable_chaos.contracts import ContainerState
from durable_chaos.faults.base import Fault, Target

OFFSET = re.compile(r"^\s*([+-]?\d+)\s*$")


class ClockSkewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset_s: int = Field(default=30, ge=-86400, le=86400, description="seconds added to the member's wall clock "
                                                                       "(negative: behind)")


def read_offset(container_id: str, path: str) -> int | None:
    """The offset the member's libfaketime file holds now (None: no such file, or not an offset we write)."""
    with tempfile.TemporaryDirectory(prefix="chaos-clock-") as tmp:
        try:
            docker.copy((container_id, path), Path(tmp) / "offset")
        except DockerException:
            return None
        found = OFFSET.match((Path(tmp) / "offset").read_text())
    return int(found.group(1)) if found else None


def write_offset(container_id: str, path: str, offset: int) -> None:
    with tempfile.TemporaryDirectory(prefix="chaos-clock-") as tmp:
        local = Path(tmp) / os.path.basename(path)
        local.write_text(f"{offset:+d}\n")
        local.chmod(0o644)  # read by the member's own user (postgres), not only root
        docker.copy(local, (container_id, path))


def faketime_library(env: dict[str, str], clock_file: str | None) -> str | None:
    """The libfaketime the member's programs run under, reading `clock_file`; None when its image has none.

    An image declares it in one of two ways: LD_PRELOAD for every process, or CHAOS_FAKETIME_PRELOAD for the
    programs it wraps (CHAOS_FAKETIME_PROGRAMS), as the postgres subject's image does for PostgreSQL alone because
    libfaketime 0.9.10 hangs Python's timed waits, Patroni's among them (subjects/postgres/faketime.Dockerfile)."""
    if env.get("FAKETIME_TIMESTAMP_FILE") != clock_file:
        return None
    preloaded = [lib for lib in env.get("LD_PRELOAD", "").replace(":", " ").split() if "faketime" in lib]
    return preloaded[0] if preloaded else env.get("CHAOS_FAKETIME_PRELOAD") or None


def container_env(c: Container) -> dict[str, str]:
    return dict(e.split("=", 1) for e in (c.config.env or []) if "=" in e)


def program(t: Target) -> str:
    argv = [*(t.container.config.entrypoint or []), *(t.container.config.cmd or [])]
    return os.path.basename(argv[0]) if argv else "an unknown program"


class ClockSkew(Fault):
    kind = "clock-skew"
    help = "shift the member's wall clock by offset_s seconds (libfaketime; PostgreSQL members only)"
    Params = ClockSkewParams
    looks_like = ("clock skew: the member runs and answers, but its wall clock is off from its peers' and clients': "
                  "timestamps it hands out (now(), log lines, wall-clock leases and TTLs) are early or late by the "
                  "offset")
    advice = ("Fix {who}'s time sync (chrony/ntpd, the hypervisor's clock) and look for data stamped with the "
              "wrong time (now() defaults, expiries, audit logs).")
    out_of_service = False

    def label(self) -> str:
        return f"clock-skew ({self.params.offset_s:+d} s)"

    def refuse(self, targets: list[Target]) -> str | None:
        for t in targets:
            if t.clock_file is None:
                return (f"{self.kind}: {t.service} runs {program(t)}, which its subject does not run under libfaketime "
                        "(Go programs such as etcd and NATS read the clock through the vDSO, out of its reach); "
                        "nothing was injected")
            if faketime_library(container_env(t.container), t.clock_file) is None:
                return (f"{self.kind}: {t.service}'s image {t.container.config.image} does not preload libfaketime "
                        f"with {t.clock_file} (LD_PRELOAD or CHAOS_FAKETIME_PRELOAD, FAKETIME_TIMESTAMP_FILE); "
                        "nothing was injected")
        return None

    def _offset(self, t: Target) -> int | None:
        return read_offset(t.container.id, t.clock_file) if t.clock_file else None

    def in_effect(self, t: Target) -> bool:
        return bool(self._offset(t))

    def inject(self, t: Target) -> bool:
        if self._offset(t) == self.params.offset_s:
            return False
        write_offset(t.container.id, t.clock_file, self.params.offset_s)
        return True

    def undo(self, t: Target) -> bool:
        if not self._offset(t):  # zero already, or no file at all: nothing is shifted
            return False
        write_offset(t.container.id, t.clock_file, 0)
        return True

    def evidence_of_effect(self, t: Target) -> str | None:
        """`date` in the member, under the libfaketime its programs run under, against this host's clock: the offset
        libfaketime really applies, not the one the file says."""
        skew = member_skew(t.container.id, faketime_library(container_env(t.container), t.clock_file))
        if skew is None or abs(skew - self.params.offset_s) > max(2.0, abs(self.params.offset_s) * 0.05):
            return None
        return f"{t.service}: its clock reads {skew:+.1f} s from the host's (date in the member, under libfaketime)"

    @classmethod
    def member_signs(cls, c: Container) -> list[str]:
        path = container_env(c).get("FAKETIME_TIMESTAMP_FILE")
        try:
            offset = read_offset(c.id, path) if path and c.state.running else None
        except (DockerException, OSError):
            return []
        return [f"wall clock shifted {offset:+d} s by libfaketime ({path})"] if offset else []

    @classmethod
    def seen_on(cls, c: ContainerState) -> str | None:
        signs = cls.signs_on(c)
        return f"{c.service}'s wall clock is off: {'; '.join(signs)}" if signs else None


def member_skew(container_id: str, library: str | None) -> float | None:
    """Seconds the member's wall clock (its `date`, under `library` as its programs are) is ahead of this host's."""
    preload = ["-e", f"LD_PRELOAD={library}"] if library else []
    try:
        out = subprocess.run(["docker", "exec", *preload, container_id, "date", "+%s.%N"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    # `docker exec` spends most of its time setting up before `date` runs, and little returning its output (on this
    # machine, quiet: the call's midpoint read 35 ms late, its end 8 ms early), so the end of the call is the
    # nearer estimate of when `date` read the clock.
    after = time.time()
    try:
        return float(out.strip()) - after
    except ValueError:
        return None
