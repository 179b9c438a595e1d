"""What the members' monitor endpoints (HTTP) say: each member's health and view of the cluster, and from the
views of those that answered, who leads the meta group and the stream, and which replicas keep up."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from durable_chaos.contracts import MemberHealth
from subjects.nats.connection import STREAM, describe

# A follower within this many entries of the commit that answered the leader within this many seconds keeps up:
# see `_current`. The raft heartbeat is 1 s: a live idle follower answers at least about once a second.
REPLICA_LAG_TOLERANCE = 100
REPLICA_QUIET_S = 3.0


def _error(response: httpx.Response) -> str:
    """The reason a monitor endpoint gives for a non-200 answer: its JSON `error`, or the status code."""
    try:
        reason = response.json().get("error")
    except (ValueError, AttributeError):
        reason = None
    return (reason or f"HTTP {response.status_code}")[:200]


def _following(followed: str | None, views: dict[str, View]) -> str:
    """Why there is no leader although members name one: they still follow a dead or deposed one."""
    if followed is None:
        return ""
    return f" (members still follow {followed}, which {'no longer leads' if followed in views else 'is down'})"


@dataclass(frozen=True)
class View:
    """What one member that answered says about the cluster."""

    jsz: dict  # its /jsz?streams=true
    meta_error: str | None  # why its /healthz?js-meta-only=true is not 200 (not caught up with the meta group)


async def member(http: httpx.AsyncClient, url: str, svc: str, timeout: float) -> tuple[MemberHealth, View | None]:
    """The member's health (its server runs JetStream) and its view of the cluster, from its monitor at `url`."""
    try:
        health, meta, jsz = await asyncio.gather(
            http.get(f"{url}/healthz", params={"js-enabled-only": "true"}, timeout=timeout),
            http.get(f"{url}/healthz", params={"js-meta-only": "true"}, timeout=timeout),
            http.get(f"{url}/jsz", params={"streams": "true"}, timeout=timeout),
        )
        if health.status_code != 200:
            return MemberHealth(service=svc, healthy=False, detail=f"unhealthy: {_error(health)}"), None
        if jsz.status_code != 200:
            return MemberHealth(service=svc, healthy=False, detail=f"/jsz answers {_error(jsz)}"), None
        view = View(jsz=jsz.json(), meta_error=None if meta.status_code == 200 else _error(meta))
        return MemberHealth(service=svc, healthy=True), view
    except (httpx.HTTPError, ValueError) as exc:
        return MemberHealth(service=svc, healthy=False, detail=describe(exc)), None


def _stream_cluster(view: View) -> dict | None:
    for account in view.jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream.get("name") == STREAM:
                return stream.get("cluster") or {}
    return None


def _leader(claims: dict[str, str | None]) -> tuple[str | None, str | None]:
    """(the live leader, the member most still follow) from each answering member's idea of the leader.

    A leader is a member that names itself and that most members follow: a member restarted from disk names
    itself leader of its old groups for a moment before it hears from the others, and the survivors of a
    killed leader keep following it until their election timeout fires."""
    votes = Counter(leader for leader in claims.values() if leader)
    if not votes:
        return None, None
    followed = votes.most_common(1)[0][0]
    live = [svc for svc, leader in claims.items() if leader == svc]
    leader = max(live, key=lambda svc: votes[svc], default=None)
    return leader, followed


def invariants(views: dict[str, View], services: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """roles and violations from the /jsz answers of the members that answered (the others are left out: they
    are reported unreachable already); `services` are all the members."""
    roles: dict[str, str] = {}
    violations: list[str] = []
    if not views:
        return roles, violations

    meta_claims = {svc: (v.jsz.get("meta_cluster") or {}).get("leader") for svc, v in views.items()}
    meta, meta_followed = _leader(meta_claims)
    if meta:
        roles["meta_leader"] = meta
        # A restarted member serves HTTP (and clients) about a second before it has rejoined JetStream's meta
        # group and caught up with it: until then it cannot host its share of the streams.
        for svc, view in views.items():
            if meta_claims[svc] != meta:
                violations.append(f"{svc}: JetStream not in contact with the meta leader {meta}")
            elif view.meta_error:
                violations.append(f"{svc}: {view.meta_error}")
    else:
        violations.append("JetStream has no meta leader" + _following(meta_followed, views))

    clusters = {svc: _stream_cluster(v) for svc, v in views.items()}
    if all(c is None for c in clusters.values()):
        violations.append(f"stream {STREAM} missing")
        return roles, violations
    leader, followed = _leader({svc: c.get("leader") for svc, c in clusters.items() if c is not None})
    if leader is None:
        violations.append(f"stream {STREAM} has no leader" + _following(followed, views))
        return roles, violations
    roles["stream_leader"] = leader
    # Only the leader knows how far behind its followers are.
    replicas = {r.get("name"): r for r in clusters[leader].get("replicas") or []}
    for svc in services:
        if svc == leader:
            continue
        replica, own = replicas.get(svc), clusters.get(svc, {})
        if replica is None:
            violations.append(f"stream {STREAM} replica {svc} missing")
        elif not _current(replica):
            violations.append(f"stream {STREAM} replica {svc} not current")
        elif svc in views and (own is None or own.get("leader") != leader):
            violations.append(f"stream {STREAM} replica {svc} not in contact with the leader {leader}")
    return roles, violations


def _current(replica: dict) -> bool:
    """Whether the leader counts a replica as keeping up. nats-server calls a replica `current` only when it
    has persisted every committed entry, so under load the slower follower of three is routinely a few
    entries "not current" (commit needs only two): tolerate a small lag from a follower that answered
    recently, and report one that lags far, has gone quiet, or is offline."""
    if replica.get("offline"):
        return False
    if replica.get("current"):
        return True
    active_s = (replica.get("active") or 0) / 1e9
    return (replica.get("lag") or 0) <= REPLICA_LAG_TOLERANCE and active_s <= REPLICA_QUIET_S
