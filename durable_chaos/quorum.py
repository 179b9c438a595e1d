"""The quorum rules a subject can declare, and what each one means: the target chooser (`durable_chaos.faults`)
and the diagnosis both apply a subject's rule, so it lives below both."""

from __future__ import annotations

from typing import Literal

# How many members must be up for a system to serve: a majority (raft: etcd, NATS JetStream), all of them, or one
# (a primary with failover: Patroni).
QuorumRule = Literal["majority", "all", "one"]


def has_quorum(rule: str, up: int, members: int) -> bool:
    """A subject's own rule (`DiagnosisHints.quorum`) for how many members must be up for it to serve."""
    return {"majority": up > members // 2, "all": up == members, "one": up >= 1}[rule]
