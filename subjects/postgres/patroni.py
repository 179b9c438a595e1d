"""What Patroni says about the postgres subject's members (`GET /patroni` on each): who is running, who is the
primary, and which replicas stream from it and keep up."""

from __future__ import annotations

import httpx

from durable_chaos.contracts import MemberHealth
from subjects.http import describe

# Patroni 3.0.2 calls the primary "master" (later versions say "primary"); both mean the role we call "leader".
PRIMARY_ROLES = ("master", "primary")
# A replica further behind the leader than this (replayed WAL) is a violation: replication is not keeping up.
MAX_LAG_BYTES = 16 * 1024 * 1024


def _lsn(value) -> int | None:
    return value if isinstance(value, int) else None


async def status(http: httpx.AsyncClient, url: str, svc: str, timeout: float) -> tuple[str, dict | None, str]:
    """(service, Patroni's /patroni answer or None, why not), from the member's REST API at `url`."""
    try:
        r = await http.get(f"{url}/patroni", timeout=timeout)
        body = r.json()
        if not isinstance(body, dict):
            return svc, None, f"unexpected answer (HTTP {r.status_code})"
        return svc, body, ""
    except (httpx.HTTPError, ValueError) as exc:
        return svc, None, describe(exc)


def member_trouble(body: dict | None, why: str) -> str:
    if body is None:
        return why
    state = body.get("state")
    if state != "running":
        return f"PostgreSQL {state or 'state unknown'}"
    return ""


def health(answer: tuple[str, dict | None, str]) -> MemberHealth:
    """A member's health from its `status` alone, before the leader's view of replication is known."""
    svc, body, why = answer
    trouble = member_trouble(body, why)
    return MemberHealth(service=svc, healthy=not trouble, detail=trouble)


def leaders(answers: dict[str, tuple[dict | None, str]], trouble: dict[str, str]) -> list[str]:
    """The running members that say they are the primary."""
    return [svc for svc, (body, _) in answers.items()
            if body and not trouble[svc] and body.get("role") in PRIMARY_ROLES]


def replication(answers: dict[str, tuple[dict | None, str]], trouble: dict[str, str],
                leader: str) -> tuple[dict[str, str], dict[str, str]]:
    """(roles, trouble of the replicas that do not keep up with `leader`) from the leader's replication view; the
    members already in `trouble` are left out."""
    roles = {"leader": leader}
    lagging: dict[str, str] = {}
    lbody = answers[leader][0]
    streams = {r.get("application_name"): r for r in lbody.get("replication") or []}
    leader_lsn = _lsn((lbody.get("xlog") or {}).get("location"))
    for svc, (body, _) in answers.items():
        if svc == leader or trouble[svc]:
            continue
        stream = streams.get(svc)
        if stream is None or stream.get("state") != "streaming":
            state = stream.get("state") if stream else "not connected"
            lagging[svc] = f"not streaming from the leader {leader} ({state})"
            continue
        if stream.get("sync_state") in ("sync", "quorum"):
            roles.setdefault("sync_standby", svc)
        replayed = _lsn((body.get("xlog") or {}).get("replayed_location"))
        if leader_lsn is not None and replayed is not None and leader_lsn - replayed > MAX_LAG_BYTES:
            lagging[svc] = f"{(leader_lsn - replayed) / 2**20:.0f} MB behind the leader {leader}"
    return roles, lagging
