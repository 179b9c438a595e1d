"""The queue/log model (NATS JetStream): what publishers were told, what the consumer was given, and what every
replica holds at the end.

Operations (their `f`): `publish` of {"id", "publisher", "n"} (ids unique, `n` growing per publisher; token: the
stream sequence it was acknowledged with); `fetch`, whose ok value is [[id, seq], ...], what a consumer pulled and
acknowledged, in delivery order; and the final `drain`, one per replica, {"replica": service, "messages":
[[id, seq], ...]}, the whole stream as that replica holds it. A fetch or drain that failed says nothing.

Findings:
- lost messages: acknowledged, never delivered, and held by no replica drained; lost in the middle (a message at a
  later sequence survived) or at the tail. Publishes of unknown outcome that were found are counted, never blamed.
  For a stream that keeps delivered messages (`keeps_delivered`: a log, not a work queue), a message no replica
  holds is lost whether or not it was delivered.
- duplicated messages: an id delivered twice (a fetch is ok only once every ack was confirmed, so a second delivery
  is a redelivery of an acknowledged message), or held twice by one replica, under two sequences.
- unexpected messages: delivered or stored, but never published, or published with outcome fail.
- publisher order: one publisher's messages in another order in the stream than its counter `n`, for messages
  whose publishes did not overlap (the earlier one was acknowledged before the later one was sent).
- replica agreement: a sequence that holds different ids on two replicas (or on a replica and in what was
  acknowledged or delivered), or a replica that lacks a sequence seen elsewhere below its own last one (a replica
  that only lags behind is not blamed).
- the sequences' order (tokens.py), when the subject names them: handed out once, growing in real-time order, and
  for a stream only the load writes to, without holes that publishes of unknown outcome cannot explain.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from durable_chaos.safety.findings import Finding
from durable_chaos.safety.op import Op
from durable_chaos.safety.tokens import tokens

INFINITY = float("inf")


@dataclass
class Log:
    """A queue history, sorted out: who published what, what was delivered, what each replica holds."""

    publishes: dict[str, Op] = field(default_factory=dict)  # id -> its publish
    deliveries: list[tuple[str, int, Op]] = field(default_factory=list)  # (id, seq, the ok fetch), in order
    drains: dict[str, tuple[Op, list[tuple[str, int]]]] = field(default_factory=dict)  # replica -> (op, messages)
    undrained: list[Op] = field(default_factory=list)  # drains that failed


def parse(ops: list[Op]) -> Log:
    log = Log()
    for op in sorted(ops, key=lambda op: op.invoke_ns):
        if op.kind == "publish" and isinstance(op.value, dict):
            log.publishes[op.value["id"]] = op
        elif op.kind == "fetch" and op.outcome == "ok":
            log.deliveries += [(mid, seq, op) for mid, seq in op.value or []]
        elif op.kind == "drain":
            if op.outcome == "ok":
                log.drains[op.value["replica"]] = (op, [(mid, seq) for mid, seq in op.value["messages"]])
            else:
                log.undrained.append(op)
    return log


def message(op: Op) -> str:
    """A publish in a sentence's words: "message a-7 (publisher 3, n 12; acknowledged with sequence 9)"."""
    v = op.value
    told = {"ok": f"acknowledged with sequence {op.token}" if op.token is not None else "acknowledged",
            "info": "outcome unknown", "fail": "refused"}[op.outcome]
    return f"message {v['id']} (publisher {v.get('publisher')}, n {v.get('n')}; {told})"


def _drain_ops(log: Log) -> list[Op]:
    return [op for op, _ in log.drains.values()]


def _ordered(ops: list[Op]) -> list[Op]:
    return sorted({id(op): op for op in ops}.values(), key=lambda op: op.invoke_ns)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def lost_messages(log: Log, keeps_delivered: bool = False) -> Finding:
    name = "lost messages"
    acked = [op for op in log.publishes.values() if op.outcome == "ok"]
    if not log.drains:
        why = (f"the drain failed on every replica ({log.undrained[0].error})" if log.undrained
               else "the stream was never drained")
        return Finding(name, "unknown", f"{why}: a message never delivered cannot be told lost from one still "
                                        f"waiting in the stream ({len(acked)} acknowledged)")
    delivered = {mid for mid, _, _ in log.deliveries}
    held: dict[str, int] = {}  # id -> its lowest sequence on any replica
    for _, messages in log.drains.values():
        for mid, seq in messages:
            held[mid] = min(seq, held.get(mid, seq))
    seen = delivered | held.keys()
    # A work queue is done with a message once it is delivered; a log still owes it to every later reader.
    found = held.keys() if keeps_delivered else seen
    # The last message any replica holds.
    top = max(((mid, seq) for _, messages in log.drains.values() for mid, seq in messages),
              key=lambda item: item[1], default=None)
    lost = [op for op in acked if op.value["id"] not in found]
    # The latest publish of a message that survived, for messages acknowledged without a sequence.
    latest = max((p.invoke_ns for p in map(log.publishes.get, held) if p is not None), default=None)
    middle = [op for op in lost if _survived_after(op, top, latest)]
    unknown = [op for op in log.publishes.values() if op.outcome == "info"]
    landed = sum(1 for op in unknown if op.value["id"] in seen)
    replicas = f"{len(log.drains)} of {len(log.drains) + len(log.undrained)} replicas drained"
    if not lost:
        return Finding(name, "ok", f"all {len(acked)} acknowledged messages were delivered or are held by a replica "
                                   f"({replicas}); {landed} of {len(unknown)} publishes of unknown outcome landed")
    first = min(lost, key=lambda op: op.invoke_ns)
    shown = [first]
    if first in middle:
        where = f"in the middle of the stream: sequence {top[1]} ({top[0]}) survived"
        shown += _publish_of(top[0], log)
    else:
        where = "at the tail of the stream: no later message survived"
    detail = (f"{_count(len(lost), 'acknowledged message')} lost ({len(middle)} in the middle of the stream, "
              f"{len(lost) - len(middle)} at its tail; {replicas}); first: {message(first)} "
              f"{'was delivered, yet' if first.value['id'] in delivered else 'was never delivered, and'} no replica "
              f"holds it, {where}")
    return Finding(name, "violated", detail, _ordered(shown + _drain_ops(log)), count=len(lost), stuck=first)


def _survived_after(op: Op, top: tuple[str, int] | None, latest: int | None) -> bool:
    """Whether a message later than `op` in the stream survived: one at a higher sequence than `op` was
    acknowledged with, or (no sequence known) one published after `op` was acknowledged."""
    if op.token is not None:
        return top is not None and top[1] > op.token
    return latest is not None and latest > op.complete_ns


def duplicated_messages(log: Log) -> Finding:
    name = "duplicated messages"
    first_delivery: dict[str, Op] = {}
    twice: dict[str, list[Op]] = {}  # id -> the ops that show it, in the order found
    for mid, _, fetch in log.deliveries:
        if mid in first_delivery:
            twice.setdefault(mid, [first_delivery[mid], fetch])
        else:
            first_delivery[mid] = fetch
    stored: dict[str, tuple[str, Op, list[int]]] = {}  # id -> (replica, its drain, the sequences)
    for replica, (drain, messages) in log.drains.items():
        seqs: dict[str, list[int]] = defaultdict(list)
        for mid, seq in messages:
            if seq not in seqs[mid]:
                seqs[mid].append(seq)
        for mid, found in seqs.items():
            if len(found) > 1 and mid not in stored:
                stored[mid] = (replica, drain, found)
    if not twice and not stored:
        return Finding(name, "ok", f"no message delivered twice ({len(log.deliveries)} deliveries) or stored twice "
                                   f"on any of {len(log.drains)} replicas drained")
    parts = []
    shown: list[Op] = []
    if twice:
        mid = next(iter(twice))
        a, b = twice[mid]
        parts.append(f"{_count(len(twice), 'message')} delivered twice; first: {_named(mid, log)} was delivered and "
                     f"acknowledged by a fetch, then delivered again {'in the same fetch' if a is b else 'later'}")
        shown += twice[mid] + _publish_of(mid, log)
    if stored:
        mid = next(iter(stored))
        replica, drain, seqs = stored[mid]
        parts.append(f"{_count(len(stored), 'message')} stored twice; first: replica {replica} holds "
                     f"{_named(mid, log)} under sequences {', '.join(map(str, seqs))}")
        shown += [drain] + _publish_of(mid, log)
    # The marked op: the second delivery, or else the drain of the replica that holds a message twice.
    return Finding(name, "violated", "; ".join(parts), _ordered(shown), count=len(twice.keys() | stored.keys()),
                   stuck=twice[next(iter(twice))][1] if twice else shown[0])


def _named(mid: str, log: Log) -> str:
    op = log.publishes.get(mid)
    return message(op) if op is not None else f"message {mid}"


def _publish_of(mid: str, log: Log) -> list[Op]:
    op = log.publishes.get(mid)
    return [op] if op is not None else []


def unexpected_messages(log: Log) -> Finding:
    name = "unexpected messages"
    seen: dict[str, tuple[Op, str]] = {}  # id -> (the first op that shows it, where)
    for mid, seq, fetch in log.deliveries:
        seen.setdefault(mid, (fetch, f"delivered with sequence {seq}"))
    for replica, (drain, messages) in log.drains.items():
        for mid, seq in messages:
            seen.setdefault(mid, (drain, f"held by replica {replica} at sequence {seq}"))
    bad = {mid: where for mid, where in seen.items()
           if mid not in log.publishes or log.publishes[mid].outcome == "fail"}
    if not bad:
        return Finding(name, "ok", f"every one of {len(seen)} messages delivered or stored was published")
    mid, (op, where) = min(bad.items(), key=lambda item: item[1][0].invoke_ns)
    publish = log.publishes.get(mid)
    why = "was never published" if publish is None else f"was {message(publish)}"
    return Finding(name, "violated", f"{_count(len(bad), 'message')} delivered or stored that nobody published "
                                     f"successfully; first: message {mid}, {where}, {why}",
                   _ordered([op] + ([publish] if publish is not None else [])), count=len(bad), stuck=op)


class _PrefixMax:
    """A Fenwick tree: the highest (sequence, op) among those added at ranks up to r."""

    def __init__(self, size: int):
        self.tree: list[tuple[int, Op] | None] = [None] * (size + 1)

    def add(self, rank: int, item: tuple[int, Op]) -> None:
        rank += 1
        while rank < len(self.tree):
            if self.tree[rank] is None or item[0] > self.tree[rank][0]:
                self.tree[rank] = item
            rank += rank & -rank

    def best(self, rank: int) -> tuple[int, Op] | None:
        """Over ranks < `rank`."""
        found = None
        while rank > 0:
            if self.tree[rank] is not None and (found is None or self.tree[rank][0] > found[0]):
                found = self.tree[rank]
            rank -= rank & -rank
        return found


def _views(log: Log) -> dict[str, dict[str, int]]:
    """Each place the stream's order shows, as id -> sequence (an id found twice: its first sequence)."""
    views: dict[str, dict[str, int]] = {
        "as acknowledged": {mid: op.token for mid, op in log.publishes.items()
                            if op.outcome == "ok" and op.token is not None},
        "as delivered": {}}
    for mid, seq, _ in log.deliveries:
        views["as delivered"].setdefault(mid, seq)
    for replica, (_, messages) in log.drains.items():
        view = views[f"on replica {replica}"] = {}
        for mid, seq in messages:
            view[mid] = min(seq, view.get(mid, seq))
    return views


def _reorders(view: dict[str, int], log: Log) -> list[tuple[Op, Op]]:
    """(a, b) per message b of a publisher stored before some message a with a lower n whose publish was
    acknowledged before b's was sent; a is the one stored latest."""
    by_publisher: dict[object, list[Op]] = defaultdict(list)
    for mid in view:
        op = log.publishes.get(mid)
        if op is not None and op.outcome != "fail":
            by_publisher[op.value.get("publisher")].append(op)
    found = []
    for ops in by_publisher.values():
        ranks = {n: i for i, n in enumerate(sorted({op.value["n"] for op in ops}))}
        done = sorted((op for op in ops if op.outcome == "ok"), key=lambda op: op.complete_ns)
        tree, j = _PrefixMax(len(ranks)), 0
        for b in sorted(ops, key=lambda op: op.invoke_ns):
            while j < len(done) and done[j].complete_ns < b.invoke_ns:
                tree.add(ranks[done[j].value["n"]], (view[done[j].value["id"]], done[j]))
                j += 1
            best = tree.best(ranks[b.value["n"]])
            if best is not None and best[0] > view[b.value["id"]]:
                found.append((best[1], b))
    return found


def publisher_order(log: Log) -> Finding:
    name = "publisher order"
    out_of_order: dict[str, tuple[str, Op, Op]] = {}  # b's id -> (where, a, b), the first view that shows it
    views = _views(log)
    for where, view in views.items():
        for a, b in _reorders(view, log):
            out_of_order.setdefault(b.value["id"], (where, a, b))
    if not out_of_order:
        return Finding(name, "ok", f"every publisher's messages are in the order it sent them "
                                   f"({', '.join(views)})")
    where, a, b = min(out_of_order.values(), key=lambda item: item[2].invoke_ns)
    view = views[where]
    return Finding(name, "violated", f"{_count(len(out_of_order), 'message')} stored before an earlier message of "
                                     f"the same publisher; first: {message(b)} was sent after {message(a)} was "
                                     f"acknowledged, yet {where} it is at sequence {view[b.value['id']]}, before "
                                     f"sequence {view[a.value['id']]}",
                   _ordered([a, b]), count=len(out_of_order), stuck=b)


def replica_agreement(log: Log) -> Finding:
    name = "replica agreement"
    # What each source says each sequence holds, and the op that says so: every replica drained, the
    # acknowledgements, the deliveries.
    sources: dict[str, dict[int, tuple[str, Op]]] = defaultdict(dict)
    clashes: list[tuple[int, str, list[Op]]] = []  # (sequence, what is wrong, the ops that show it)

    def note(source: str, seq: int, mid: str, op: Op) -> None:
        held = sources[source]
        if seq in held and held[seq][0] != mid:
            clashes.append((seq, f"sequence {seq} is both {held[seq][0]} and {mid} {source}",
                            [held[seq][1], op]))
        held.setdefault(seq, (mid, op))

    for replica, (drain, messages) in log.drains.items():
        for mid, seq in messages:
            note(f"on replica {replica}", seq, mid, drain)
    for mid, op in log.publishes.items():
        if op.outcome == "ok" and op.token is not None:
            note("as acknowledged", op.token, mid, op)
    for mid, seq, fetch in log.deliveries:
        note("as delivered", seq, mid, fetch)
    # Each replica against every other source, below the replica's own last sequence (above it, it only lags).
    for replica, (drain, _) in log.drains.items():
        held = sources[f"on replica {replica}"]
        last = max(held, default=0)
        for source, other in sources.items():
            if source == f"on replica {replica}":
                continue
            for seq, (mid, op) in other.items():
                if seq > last:
                    continue
                if seq not in held:
                    clashes.append((seq, f"replica {replica} lacks sequence {seq} ({mid} {source}), below its "
                                         f"own last sequence {last}", [drain, op]))
                elif held[seq][0] != mid:
                    clashes.append((seq, f"sequence {seq} holds {held[seq][0]} on replica {replica} but {mid} "
                                         f"{source}", [drain, op]))
    if not clashes:
        return Finding(name, "ok", f"the {len(log.drains)} replicas drained agree on every sequence, with each other "
                                   f"and with what was acknowledged and delivered")
    seq, what, shown = min(clashes, key=lambda clash: clash[0])
    bad = {clash[0] for clash in clashes}
    return Finding(name, "violated", f"{_count(len(bad), 'stream sequence')} "
                                     f"{'disagrees' if len(bad) == 1 else 'disagree'}; first: {what}",
                   _ordered(shown), count=len(bad), stuck=shown[0])


def sequence_order(log: Log, token_name: str, gapless: bool) -> Finding:
    """The system's numbering of the publishes (tokens.py): sequences handed out once, growing in real-time order
    across publishers, and (`gapless`, a stream only this load writes to) with no hole a publish of unknown outcome
    cannot explain. A publish is judged as a write of its message id."""
    writes = [Op(kind="write", outcome=op.outcome, invoke_ns=op.invoke_ns, complete_ns=op.complete_ns, key="stream",
                 value=op.value["id"], process=op.process, token=op.token) for op in log.publishes.values()]
    as_writes = {id(w): op for w, op in zip(writes, log.publishes.values())}  # the write judged -> its publish
    found = tokens(writes, token_name, gapless)
    found.detail = found.detail.replace("write stream=", "publish of message ")
    found.ops = [as_writes[id(w)] for w in found.ops]
    return found


def check_queue(ops: list[Op], *, token_name: str | None = None, gapless: bool = False,
                keeps_delivered: bool = False, **_) -> list[Finding]:
    """Every queue finding on one history; with `token_name` (what the subject calls its sequences), their
    order too. `keeps_delivered`: the stream keeps a message after it was delivered (a log)."""
    log = parse(ops)
    findings = [lost_messages(log, keeps_delivered), duplicated_messages(log), unexpected_messages(log),
                publisher_order(log), replica_agreement(log)]
    if token_name is not None:
        findings.append(sequence_order(log, token_name, gapless))
    return findings
