"""The fault catalog: every kind a run can inject, each an inject/undo pair with its own parameters model.

Adding a kind = one `Fault` subclass (in `container.py`, `network.py` or a module of its own) listed in `CATALOG`.
The kind carries its parameters, inject and undo, its advice, its signature on a member and how to observe it;
`Fault` refuses a kind that lacks one. The workflow never learns what a kind does: it carries the kind's name and
parameters, and the activities (faults, evidence, diagnosis, Claude's prompt) ask the catalog.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from pydantic import ValidationError
from python_on_whales import DockerException
from python_on_whales.client_config import ClientConfig

from durable_chaos.contracts import ContainerState, Sign
from durable_chaos.docker_engine import InspectedOnce
from durable_chaos.faults.base import BadFault, Fault, Healthy, Target
from durable_chaos.faults.clock import ClockSkew
from durable_chaos.faults.container import Kill, Pause, Stop
from durable_chaos.faults.corrupt import Corrupt
from durable_chaos.faults.disk import DiskSlow
from durable_chaos.faults.disk_full import DiskFull
from durable_chaos.faults.delay import Duplicate, Latency, Reorder
from durable_chaos.faults.netns import probe_netns
from durable_chaos.faults.network import Bandwidth, Loss, Partition
from durable_chaos.faults.power_loss import PowerLoss
from durable_chaos.faults.resource import Cpu, Memory, ProcessPause
from durable_chaos.faults.targeting import target_choice

CATALOG: dict[str, type[Fault]] = {f.kind: f for f in (Kill, Stop, Pause, Partition, Loss, Bandwidth, Latency,
                                                       Reorder, Duplicate, Cpu, Memory, ProcessPause, DiskSlow,
                                                       DiskFull, ClockSkew, PowerLoss, Corrupt)}

__all__ = ["CATALOG", "BadFault", "Fault", "Healthy", "Target", "catalog_help", "make_fault", "parse_params",
           "signatures", "signs_in_member", "target_choice"]


def make_fault(kind: str, params: Mapping[str, Any] | None = None) -> Fault:
    """The fault of `kind` with validated parameters; BadFault (one line) for an unknown kind or a bad value."""
    cls = CATALOG.get(kind)
    if cls is None:
        raise BadFault(f"unknown fault {kind!r} (known: {', '.join(CATALOG)})", "kind")
    try:
        return cls(cls.Params.model_validate(dict(params or {})))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(part) for part in err["loc"]) or "parameters"
        known = ", ".join(cls.Params.model_fields) or "none"
        if err["type"] == "extra_forbidden":
            raise BadFault(f"fault {kind} has no parameter {name!r} (its parameters: {known})", "params") from None
        value = err.get("input")
        raise BadFault(f"fault {kind}: {name}={value if isinstance(value, str) else repr(value)} is invalid: "
                       f"{err['msg']}", "params") from None


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    """`--param key=value` options as typed; the kind's model converts and validates the values."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadFault(f"--param {pair!r}: expected KEY=VALUE, e.g. --param percent=30")
        out[key.strip()] = value.strip()
    return out


def catalog_help() -> str:
    """The kinds, one per line with their parameters and defaults: the epilog of `chaos --help`. Click keeps a
    paragraph that starts with a \\b line as it is written."""
    lines = ["\b", "Fault kinds (--fault KIND, parameters with -p KEY=VALUE; defaults shown):"]
    for kind, cls in CATALOG.items():
        params = " ".join(f"{name}={field.default}" for name, field in cls.Params.model_fields.items()
                          if field.default is not None)
        lines.append(f"  {kind:<10} {cls.help}" + (f"  [{params}]" if params else ""))
    return "\n".join(lines)


def signs_in_member(container_id: str) -> list[Sign]:
    """Every kind's signs on a running member, in catalog order: those in its network namespace (one helper runs
    the probes of all kinds, once each, however many kinds read a probe's output), then each kind's own, read from
    one inspect of the member that every kind shares (over the Engine API)."""
    kinds = [cls for cls in CATALOG.values() if cls.netns_probe is not None]
    found = probe_netns(container_id, list(dict.fromkeys(cls.netns_probe for cls in kinds)))
    signs = {cls.kind: [Sign(kind=cls.kind, detail=line) for line in cls.observe(found.get(cls.netns_probe, []))]
             for cls in kinds}
    try:
        member = InspectedOnce(ClientConfig(), container_id)
    except DockerException:  # gone meanwhile: what its namespace showed is all there is
        member = None
    return [sign for kind, cls in CATALOG.items()
            for sign in [*signs.get(kind, []),
                         *(Sign(kind=kind, detail=d) for d in (cls.member_signs(member) if member else []))]]


def signatures(c: ContainerState) -> dict[str, str]:
    """kind -> finding, for every kind whose signature this member shows (each kind knows its own)."""
    return {kind: found for kind, cls in CATALOG.items() if (found := cls.seen_on(c))}
