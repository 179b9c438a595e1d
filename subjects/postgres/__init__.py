"""The postgres subject: PostgreSQL 15 on three members run by Patroni 3.0.2, with a 3-member etcd as its store.

Roles come from Patroni itself (`GET /patroni` on every member); SQL goes through psycopg (v3, async). Load
clients connect as a real application does, with `target_session_attrs=read-write` over every member, so each one
finds the current primary and follows a failover by reconnecting after an error.
"""

from __future__ import annotations
from __future__ import annotations

from pathlib import Path

from durable_chaos.contracts import SubjectDefaults
from subjects.base import (
    DiagnosisHints,
    FromDebian,
    ImageSpec,
    Members,
    Session,
    Subject,
    SubjectInstance,
    local_or_upstream,
)
from subjects.etcd import etcd_image
from subjects.postgres.session import PostgresSession
from subjects.postgres.sql import PASSWORD, USER  # noqa: F401 - the fixed test credentials, public names of this subject

# "-pgclock": PostgreSQL, and only PostgreSQL, runs under libfaketime (faketime.Dockerfile); a new tag, so an image
# built before (none, or libfaketime preloaded into Patroni too) is never taken for this one.
LOCAL_IMAGE = "chaos-patroni:3.0.2-pg15-pgclock"
IMAGE_ENV = "PATRONI_IMAGE"  # any image with `patroni`, a `postgres` user and PostgreSQL 15 (see the compose file)
# Debian bookworm's packages: patroni 3.0.2 (it talks to etcd v3 through etcd's JSON gateway, `etcd3:` in its
# configuration, with python3-etcd for the shared etcd code) and PostgreSQL 15. Patroni's configuration lives in
# the compose file; the one layer on top runs PostgreSQL under libfaketime for the clock-skew fault
# (see faketime.Dockerfile).
RECIPE = FromDebian(packages=("patroni", "python3-etcd", "postgresql-15", "libfaketime"),
                    dockerfile=Path(__file__).parent / "faketime.Dockerfile")

PG_SERVICES = ("pg1", "pg2", "pg3")


def patroni_image() -> ImageSpec:
    return local_or_upstream(LOCAL_IMAGE, RECIPE, IMAGE_ENV)


class Postgres(Subject):
    name = "postgres"
    folder = Path(__file__).parent
    services = ("etcd1", "etcd2", "etcd3", *PG_SERVICES)
    targets = PG_SERVICES
    default_project = "chaos-postgres"
    # Patroni's postgresql.data_dir in the compose file (the WAL lives inside it, pg_wal).
    data_paths = {s: "/var/lib/postgresql/patroni" for s in PG_SERVICES}
    # Its write-ahead log segments (24 hex digits each).
    data_files = ("pg_wal/[0-9A-F]*",)
    # Patroni makes a fresh copy of the leader (pg_basebackup) for a replica whose data directory is empty.
    rejoins_empty = True
    # PostgreSQL (C) reads the clock through libc, where libfaketime shifts it (faketime.Dockerfile). Patroni's own
    # clock stays the host's: libfaketime hangs Python's timed waits. The etcd members are Go programs it cannot
    # reach, and are no targets anyway.
    clock_files = {s: "/etc/chaos-clock-offset" for s in PG_SERVICES}
    default_port_base = 23820
    ports = 6  # Patroni REST of pg1..3 on base+1..3, PostgreSQL of pg1..3 on base+4..6
    primary_role = "leader"
    hints = DiagnosisHints(
        quorum="one",
        log_markers=(
            # Patroni's "LEVEL: message" and PostgreSQL's "LEVEL:  message" lines.
            r"\b(?:WARNING|ERROR|CRITICAL|FATAL|PANIC):",
            r"promoted self to leader|demot(?:ed|ing) self|lost the leader lock|Lock owner: None",
            r"running pg_rewind|pg_rewind|reinitializ|removing data directory",
            r"database system was (?:interrupted|not properly shut down)|crash recovery",
            r"could not (?:connect to|receive data from) (?:the primary|WAL stream)|terminating walreceiver",
            r"Failed to get list of machines|Request to etcd failed|etcd.*(?:timed out|unreachable)",
        ),
        prompt_notes=(
            "PostgreSQL here is one primary (Patroni role 'leader', Patroni 3.0.2 says 'master') with two "
            "asynchronous streaming replicas; Patroni holds the leader key in etcd (ttl 8 s, loop_wait 1 s). When the "
            "primary dies, the replicas keep running read-only and there is no leader and no write for up to ~8 s "
            "until its key expires; then the most advanced replica promotes itself (new timeline) and the other one "
            "follows it. Replicas reported 'not streaming' or a cluster with 'no leader' during that window are "
            "victims, not the fault. A restarted former primary rejoins as a replica (pg_rewind) after a few "
            "seconds. The etcd members are Patroni's store, not targets: if etcd loses its majority, the primary "
            "demotes itself and no member is leader although every PostgreSQL process is up. Known bug of this "
            "Patroni (3.0.2, fixed in 3.0.3): a primary that was frozen (paused) past its key's expiry can take the "
            "key back when it resumes; then two members briefly claim leadership, the newer primary is rewound and "
            "the writes it acknowledged meanwhile are lost."
        ),
    )
    # A killed member is refused at once and a frozen one times out a check; failover of a killed leader takes
    # 7-9 s and a restarted former leader is streaming again 5-7 s after `docker start` (measured), so restore
    # has ample margin even on a busy host or when pg_rewind fails and a fresh copy is taken.
    defaults = SubjectDefaults(detect_timeout_s=30.0, restore_timeout_s=60.0)

    def api_endpoints(self, port_base: int) -> dict[str, str]:
        return {svc: f"http://127.0.0.1:{port_base + i}" for i, svc in enumerate(PG_SERVICES, start=1)}

    def sql_ports(self, port_base: int) -> dict[str, int]:
        return {svc: port_base + len(PG_SERVICES) + i for i, svc in enumerate(PG_SERVICES, start=1)}

    def compose_env(self, port_base: int) -> dict[str, str]:
        env = {f"{svc.upper()}_API_PORT": url.rsplit(":", 1)[1] for svc, url in self.api_endpoints(port_base).items()}
        env |= {f"{svc.upper()}_SQL_PORT": str(port) for svc, port in self.sql_ports(port_base).items()}
        return env

    def images(self) -> list[ImageSpec]:
        return [etcd_image(), patroni_image()]

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return PostgresSession(self.api_endpoints(instance.port_base), self.sql_ports(instance.port_base))


POSTGRES = Postgres()
