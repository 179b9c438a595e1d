"""List-append transactions, checked the way Jepsen's Elle does (Kingsbury & Alvaro, "Elle: Inferring Isolation
Anomalies from Experimental Observations", VLDB 2020), against the isolation level the subject promises.

Each transaction (`txn`) appends values to a few keys, each key a list, and reads a few keys. A value is appended
once in the whole run and a list only grows, so a read names every append it saw and in which order: the longest
read of a key is its version order, and every other read must be a prefix of it. From that order follow the
dependencies between committed transactions (Adya's):
- ww: T2 appended the value right after T1's (T2 overwrote T1's version),
- wr: T2 read a list whose last element T1 appended (T2 saw T1's write),
- rw: T1 read a list, and T2 appended the next element (T1 did not see T2's write: an anti-dependency),
- rt: T1 completed before T2 was invoked (realtime, for strict serializability).
A cycle of dependencies is an anomaly, named by the edges it needs: G0 (ww only), G1c (ww and wr), G-single (one
rw), G2-item (two or more rw), each with `-realtime` when it needs an rt edge. Reads that need no cycle to be wrong
are anomalies too: G1a (a read saw a failed transaction's append), G1b (a read saw a transaction's non-final
append), internal inconsistency (a transaction did not see its own appends), incompatible orders (two reads of a
key that are not prefixes of each other), duplicates, values nobody appended. The final phase reads each key once
more; acknowledged appends missing from it are lost appends (e.g. after a failover with asynchronous replication).

Committed transactions are the ok ones and the info ones some read saw an append of; an info transaction nobody
saw may as well not have happened (always a legal choice). Every inference is sound: a violation is certain.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from durable_chaos.safety.findings import Finding
from durable_chaos.safety.op import Op

# Search steps (edges visited while looking for cycles, plus edges inferred from unread appends) before the check
# gives up: the verdict is then unknown, never a guess.
SEARCH_BUDGET = 5_000_000
DEFAULT_ISOLATION = "strict-serializable"  # Elle's default: what a history that names no level is held to
EXAMPLES = 3  # cases worded in a finding's detail

# The anomalies each level forbids (Adya; Elle's names). A G-single cycle is a G2-item cycle with one
# anti-dependency, so a level that forbids G2-item forbids it too; a lost update is a G-single or G2-item cycle on
# one key (both read the same version, both appended).
READ_COMMITTED = frozenset({"G0", "G1a", "G1b", "G1c"})
SERIALIZABLE = READ_COMMITTED | {"G-single", "G2-item", "lost update"}
FORBIDDEN: dict[str, frozenset[str]] = {
    "read-committed": READ_COMMITTED,
    "repeatable-read": SERIALIZABLE,  # Adya's PL-2.99
    "snapshot-isolation": READ_COMMITTED | {"G-single", "lost update"},
    "serializable": SERIALIZABLE,
    "strict-serializable": SERIALIZABLE | {"G0-realtime", "G1c-realtime", "G-single-realtime", "G2-item-realtime"},
}
# No level allows these: the history itself is impossible.
ALWAYS_FORBIDDEN = frozenset({"internal inconsistency", "incompatible order", "duplicates", "values never written"})

GLOSS = {
    "G0": "a cycle of write-write dependencies (dirty writes)",
    "G1a": "a read saw an append of a transaction that failed (aborted read)",
    "G1b": "a read saw an append that its transaction later followed with another to the same key (intermediate "
           "read)",
    "G1c": "a cycle of write-write and write-read dependencies (circular information flow)",
    "G-single": "a cycle with exactly one anti-dependency (read skew)",
    "G2-item": "a cycle with two or more anti-dependencies (write skew)",
    "lost update": "two transactions read the same version of a key and both appended to it",
    "internal inconsistency": "a transaction's read does not reflect its own earlier appends and reads",
    "incompatible order": "two reads of a key disagree on its order: neither is a prefix of the other",
    "duplicates": "a value appears twice in one read of a list",
    "values never written": "a read saw a value no transaction appended",
}
GLOSS |= {f"{name}-realtime": GLOSS[name].split(" (")[0] + " and realtime order (a transaction completed before "
                                                            "another began)"
          for name in ("G0", "G1c", "G-single", "G2-item")}

# (anomaly, the dependencies a path may follow, how many rw edges the cycle has: 0, 1 or 2 = two or more), in the
# order searched: a component's first match is its most severe anomaly, and every level forbids a prefix of this
# list, so the first match decides whether the component is forbidden.
CYCLE_SEARCHES = (
    ("G0", frozenset({"ww"}), 0),
    ("G1c", frozenset({"ww", "wr"}), 0),
    ("G-single", frozenset({"ww", "wr"}), 1),
    ("G2-item", frozenset({"ww", "wr"}), 2),
    ("G0-realtime", frozenset({"ww", "rt"}), 0),
    ("G1c-realtime", frozenset({"ww", "wr", "rt"}), 0),
    ("G-single-realtime", frozenset({"ww", "wr", "rt"}), 1),
    ("G2-item-realtime", frozenset({"ww", "wr", "rt"}), 2),
)
KIND_PREFERENCE = ("ww", "wr", "rt", "rw")  # how a pair with several dependencies is worded


class BudgetSpent(Exception):
    pass


@dataclass(eq=False)
class Txn:
    n: int  # T<n>: its place in invoke order
    op: Op
    committed: bool = False
    final_append: dict[Any, Any] = field(default_factory=dict)  # key -> its last append to the key

    @property
    def name(self) -> str:
        return f"T{self.n}"


@dataclass
class Case:
    """One instance of an anomaly: the ops that show it, in words, and the cycle when it is one."""

    ops: list[Op]
    why: str
    cycle: list[tuple[Op, Op, str, str]] = field(default_factory=list)


def _micro_ops(op: Op) -> list[list]:
    return op.value if isinstance(op.value, list) else []


def appended_keys(op: Op) -> set[str]:
    """The keys a transaction appends to (none for any other operation)."""
    return {m[1] for m in _micro_ops(op) if m[0] == "append"} if op.kind == "txn" else set()


def _as_list(value: Any) -> tuple:
    return () if value is None else tuple(value)


def _consistent(values: tuple, mine: tuple, whole: bool) -> bool:
    """Whether a read agrees with what its own transaction did before: the list it read last plus its appends since
    (`whole`), or, with no read before, a list ending with its appends."""
    return values == mine if whole else len(values) >= len(mine) and values[len(values) - len(mine):] == mine


def _short(values: tuple) -> str:
    shown = " ".join(map(str, values[-4:]))
    return f"[{'… ' if len(values) > 4 else ''}{shown}]"


def _wording(txn: Txn) -> str:
    """T3 (process 2, ok: append 7 to k1, read k2 -> [… 4 5 9])"""
    parts = [f"append {v} to {k}" if f == "append" else f"read {k}" + (
        f" -> {_short(_as_list(v))}" if txn.op.outcome == "ok" else "") for f, k, v in _micro_ops(txn.op)]
    final = "final read, " if txn.op.final else ""
    return f"{txn.name} ({final}process {txn.op.process}, {txn.op.outcome}: {', '.join(parts)})"


class Budget:
    def __init__(self, steps: int):
        self.left = steps

    def spend(self, steps: int = 1) -> None:
        self.left -= steps
        if self.left < 0:
            raise BudgetSpent


class Graph:
    """Dependencies between committed transactions: out[a][b] = {kind: (key, value)} (rt: None)."""

    def __init__(self):
        self.out: dict[Txn, dict[Txn, dict[str, Any]]] = defaultdict(dict)
        self.edges = 0

    def add(self, a: Txn, b: Txn, kind: str, why: Any = None) -> None:
        if a is b:
            return
        kinds = self.out[a].setdefault(b, {})
        if kind not in kinds:
            kinds[kind] = why
            self.edges += 1

    def explain(self, a: Txn, b: Txn, kind: str) -> str:
        """Why a < b through `kind`, in plain words."""
        why = self.out[a][b][kind]
        if kind == "ww":
            key, before, value = why
            return f"{b.name} appended {value} to {key} right after {a.name}'s {before}" if before is not None else \
                f"{b.name}'s append of {value} to {key} was never read, so it came after every append read, " \
                f"the last of which is {a.name}'s"
        if kind == "wr":
            key, value = why
            return f"{b.name} read {a.name}'s append of {value} to {key}"
        if kind == "rw":
            key, value = why
            return f"{a.name} read {key} without {b.name}'s append of {value}"
        return f"{a.name} completed before {b.name} began"


def _realtime(graph: Graph, txns: list[Txn]) -> None:
    """rt edges, without the transitive ones: each transaction gets an edge from the transactions that completed
    last before it was invoked (those no other completed one follows), as Elle builds it. A transaction of unknown
    outcome never completed."""
    events = [(t.op.invoke_ns, 0, t.n, t) for t in txns]
    events += [(t.op.complete_ns, 1, t.n, t) for t in txns if t.op.outcome == "ok"]
    # At equal times invokes first: touching transactions count as concurrent (never a false alarm).
    events.sort(key=lambda e: e[:3])
    frontier: set[Txn] = set()
    before: dict[Txn, tuple[Txn, ...]] = {}
    for _, completes, _, t in events:
        if completes:
            frontier.difference_update(before.get(t, ()))  # nothing, for a completion stamped before its invoke
            frontier.add(t)
        else:
            before[t] = tuple(frontier)
            for p in before[t]:
                graph.add(p, t, "rt")


def _path(graph: Graph, start: Txn, goal: Txn, nodes: set[Txn] | dict[Txn, int], kinds: frozenset[str],
          budget: Budget, upto: int | None = None) -> list[Txn] | None:
    """The shortest path start -> goal within `nodes` along edges of `kinds` (breadth first); with `upto`, `nodes`
    ranks them, and the path keeps to those ranked at most `upto`."""
    parent: dict[Txn, Txn | None] = {start: None}
    queue = deque([start])
    while queue:
        a = queue.popleft()
        for b, edge in graph.out[a].items():
            budget.spend()
            if b in parent or b not in nodes or kinds.isdisjoint(edge) or upto is not None and nodes[b] > upto:
                continue
            parent[b] = a
            if b is goal:
                path = [b]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1]
            queue.append(b)
    return None


def _subgraph_cycle(graph: Graph, nodes: set[Txn], kinds: frozenset[str], budget: Budget) -> list[Txn] | None:
    """A short cycle within `nodes` along edges of `kinds`: [a, ..., a]."""
    sub = nx.DiGraph()
    for a in nodes:
        for b, edge in graph.out[a].items():
            budget.spend()
            if b in nodes and not kinds.isdisjoint(edge):
                sub.add_edge(a, b)
    for component in nx.strongly_connected_components(sub):
        if len(component) > 1:
            start = min(component, key=lambda t: t.n)
            back = next(b for b in sub.successors(start) if b in component)
            return [start] + _path(graph, back, start, component, kinds, budget)
    return None


def _one_rw_cycle(graph: Graph, nodes: set[Txn], kinds: frozenset[str], budget: Budget) -> list[Txn] | None:
    """A cycle within `nodes` made of one rw edge a -> b and a path b -> a along `kinds`.

    `kinds` alone has no cycle within `nodes` (searched before), so its edges order them (topologically): b reaches
    a only if b comes before a, and only through the nodes in between. rw edges spanning the fewest nodes are
    tried first, which finds a short cycle soonest and keeps each search small in a large component."""
    dag = nx.DiGraph()
    dag.add_nodes_from(nodes)
    for a in nodes:
        budget.spend(len(graph.out[a]))
        dag.add_edges_from((a, b) for b, edge in graph.out[a].items() if b in nodes and not kinds.isdisjoint(edge))
    rank = {t: i for i, t in enumerate(nx.topological_sort(dag))}
    candidates = sorted((rank[a] - rank[b], a.n, b.n, a, b) for a in nodes for b, edge in graph.out[a].items()
                        if b in nodes and "rw" in edge and rank[b] < rank[a])
    for *_, a, b in candidates:
        path = _path(graph, b, a, rank, kinds, budget, upto=rank[a])
        if path is not None:
            return [a] + path
    return None


def _cycle_edges(graph: Graph, cycle: list[Txn], kinds: frozenset[str], rw_at: int | None) -> list[tuple]:
    """(from, to, kind) along a cycle [a, ..., a]; the edge at index `rw_at` is the rw one."""
    edges = []
    for i, (a, b) in enumerate(zip(cycle, cycle[1:])):
        have = graph.out[a][b]
        kind = "rw" if i == rw_at else next(k for k in KIND_PREFERENCE if k in have and (k in kinds or k == "rw"))
        edges.append((a, b, kind))
    return edges


def _classify(graph: Graph, component: set[Txn], budget: Budget) -> tuple[str, list[tuple]] | None:
    for anomaly, kinds, rws in CYCLE_SEARCHES:
        if rws == 0:
            cycle = _subgraph_cycle(graph, component, kinds, budget)
            rw_at = None
        elif rws == 1:
            cycle = _one_rw_cycle(graph, component, kinds, budget)
            rw_at = 0
        else:
            cycle = _subgraph_cycle(graph, component, kinds | {"rw"}, budget)
            rw_at = None
        if cycle is not None:
            return anomaly, _cycle_edges(graph, cycle, kinds, rw_at)
    return None


def _cycle_case(graph: Graph, edges: list[tuple]) -> Case:
    txns = [a for a, _, _ in edges]
    steps = [(a, b, kind, graph.explain(a, b, kind)) for a, b, kind in edges]
    why = "; ".join(f"{a.name} < {b.name} because {text} ({kind})" for a, b, kind, text in steps)
    who = "; ".join(_wording(t) for t in txns)
    return Case([t.op for t in txns], f"{why}. Where {who}",
                [(a.op, b.op, kind, text) for a, b, kind, text in steps])


class _History:
    """The history's transactions, what each appended and read, and the version order of each key."""

    def __init__(self, ops: list[Op]):
        self.txns = [Txn(n, op) for n, op in enumerate(
            sorted((op for op in ops if op.kind == "txn"), key=lambda op: op.invoke_ns), start=1)]
        self.writer: dict[tuple[Any, Any], Txn] = {}  # (key, value) -> the transaction that appended it
        self.reads: dict[Any, list[tuple[Txn, tuple]]] = defaultdict(list)  # key -> every ok read of it
        self.external: list[tuple[Txn, Any, tuple]] = []  # reads before the transaction appended to the key
        self.appenders: dict[Any, list[Txn]] = defaultdict(list)  # key -> transactions that appended to it
        self.cases: dict[str, list[Case]] = defaultdict(list)
        self.reused: list[tuple[Any, Any, Txn, Txn]] = []  # (key, value, first appender, another)
        for t in self.txns:
            self._scan(t)
        self.order: dict[Any, tuple] = {}  # key -> its version order (keys whose reads agree)
        for key, reads in self.reads.items():
            self._order(key, reads)
        self.observed = {(key, v) for key, order in self.order.items() for v in order}
        for key, reads in self.reads.items():
            if key not in self.order:  # what the disagreeing reads saw was still seen
                self.observed.update((key, v) for _, values in reads for v in values)
        for t in self.txns:
            t.committed = t.op.outcome == "ok" or t.op.outcome == "info" and any(
                f == "append" and (k, v) in self.observed for f, k, v in _micro_ops(t.op))

    def _scan(self, t: Txn) -> None:
        ok = t.op.outcome == "ok"
        mine: dict[Any, list] = {}  # key -> what this transaction knows the list ends with
        known: dict[Any, bool] = {}  # key -> whether `mine` is the whole list (a read came first)
        for f, key, value in _micro_ops(t.op):
            if f == "append":
                first = self.writer.setdefault((key, value), t)
                if first is not t:
                    self.reused.append((key, value, first, t))
                if key not in t.final_append:
                    self.appenders[key].append(t)
                t.final_append[key] = value
                mine.setdefault(key, []).append(value)
                known.setdefault(key, False)
                continue
            if not ok:
                continue
            values = _as_list(value)
            self.reads[key].append((t, values))
            if key not in mine:
                self.external.append((t, key, values))
            elif not _consistent(values, tuple(mine[key]), known[key]):
                expected = _short(tuple(mine[key])) if known[key] else f"a list ending {_short(tuple(mine[key]))}"
                self.cases["internal inconsistency"].append(Case(
                    [t.op], f"{_wording(t)} read {key} -> {_short(values)} where its own earlier operations on "
                            f"{key} mean {expected}"))
            mine[key], known[key] = list(values), True

    def _order(self, key: Any, reads: list[tuple[Txn, tuple]]) -> None:
        longest_txn, longest = max(reads, key=lambda r: len(r[1]))
        bad = [(t, values) for t, values in reads if longest[:len(values)] != values]
        for t, values in bad[:1]:
            self.cases["incompatible order"].append(Case(
                sorted([longest_txn.op, t.op], key=lambda op: op.invoke_ns),
                f"{longest_txn.name} read {key} -> {_short(longest)} but {t.name} read {key} -> {_short(values)} "
                f"({len(bad)} reads of {key} disagree with the longest): where {_wording(longest_txn)}; "
                f"{_wording(t)}"))
        for t, values in [(longest_txn, longest)] + bad:
            if len(set(values)) != len(values):
                twice = next(v for i, v in enumerate(values) if v in values[:i])
                self.cases["duplicates"].append(Case([t.op], f"{_wording(t)} read {key} with {twice} twice"))
            for i, v in enumerate(values):
                writer = self.writer.get((key, v))
                if writer is None:
                    self.cases["values never written"].append(Case(
                        [t.op], f"{_wording(t)} read {v} in {key}, which no transaction appended"))
                elif writer.op.outcome == "fail":
                    self.cases["G1a"].append(Case(
                        [writer.op, t.op], f"{t.name} read {writer.name}'s append of {v} to {key}, and "
                                           f"{writer.name} failed: where {_wording(writer)}; {_wording(t)}"))
        if not bad:
            self.order[key] = longest
            self._appended_in_order(key, longest_txn, longest)

    def _appended_in_order(self, key: Any, reader: Txn, order: tuple) -> None:
        """A transaction's appends to a key are in the list in the order it made them: a read that shows one of them
        shows the ones it made before, and earlier."""
        where = {v: i for i, v in enumerate(order)}
        for t in self.appenders[key]:
            mine = [v for f, k, v in _micro_ops(t.op) if f == "append" and k == key]
            places = [where.get(v) for v in mine]
            last = max((j for j, p in enumerate(places) if p is not None), default=None)
            if last is None or all(p is not None for p in places[:last + 1]) and places[:last + 1] == sorted(
                    places[:last + 1]):
                continue
            self.cases["incompatible order"].append(Case(
                sorted([t.op, reader.op], key=lambda op: op.invoke_ns),
                f"{t.name} appended {', '.join(map(str, mine))} to {key} in that order, but {reader.name} read "
                f"{key} -> {_short(order)}: where {_wording(t)}; {_wording(reader)}"))


def _intermediate_reads(h: _History) -> None:
    for key, reads in h.reads.items():
        for t, values in reads:
            if not values:
                continue
            writer = h.writer.get((key, values[-1]))
            if writer is not None and writer is not t and writer.final_append.get(key) != values[-1]:
                h.cases["G1b"].append(Case(
                    [writer.op, t.op], f"{t.name} read {key} -> {_short(values)}, ending with {writer.name}'s "
                                       f"append of {values[-1]}, which {writer.name} followed with "
                                       f"{writer.final_append[key]}: where {_wording(writer)}; {_wording(t)}"))


def _lost_updates(h: _History) -> None:
    by_version: dict[tuple[Any, tuple], list[Txn]] = defaultdict(list)
    for t, key, values in h.external:
        if key in t.final_append and t.op.outcome == "ok":
            by_version[(key, values)].append(t)
    for (key, _), txns in by_version.items():
        if len(txns) > 1:
            names = ", ".join(t.name for t in txns)
            h.cases["lost update"].append(Case(
                [t.op for t in txns], f"{names} read the same version of {key} and each appended to it: where "
                                      + "; ".join(_wording(t) for t in txns)))


def _dependencies(h: _History, budget: Budget) -> Graph:
    graph = Graph()
    committed = [t for t in h.txns if t.committed]
    for key, order in h.order.items():
        writers = [h.writer.get((key, v)) for v in order]
        for i in range(1, len(order)):
            a, b = writers[i - 1], writers[i]
            if a is not None and b is not None and a.committed and b.committed:
                graph.add(a, b, "ww", (key, order[i - 1], order[i]))
        # A committed append nobody read comes after every append read (the longest read is a prefix of what
        # the key will hold): after the last one, and after every read of the whole order.
        seen = set(order)
        unread = [t for t in h.appenders[key] if t.committed and t.final_append[key] not in seen]
        if unread:
            readers = [t for t, values in h.reads[key] if len(values) == len(order)]
            budget.spend(len(unread) * (len(readers) + 1))
            last = writers[-1] if writers else None
            for u in unread:
                if last is not None and last.committed:
                    graph.add(last, u, "ww", (key, None, u.final_append[key]))
                for r in readers:
                    graph.add(r, u, "rw", (key, u.final_append[key]))
    for t, key, values in h.external:
        order = h.order.get(key)
        if values and (writer := h.writer.get((key, values[-1]))) is not None and writer.committed:
            graph.add(writer, t, "wr", (key, values[-1]))
        if order is not None and len(values) < len(order):
            nxt = h.writer.get((key, order[len(values)]))
            if nxt is not None and nxt.committed:
                graph.add(t, nxt, "rw", (key, order[len(values)]))
    _realtime(graph, committed)
    return graph


def _cycles(h: _History, graph: Graph, budget: Budget) -> None:
    whole = nx.DiGraph()
    whole.add_edges_from((a, b) for a, outs in graph.out.items() for b in outs)
    components = sorted((c for c in nx.strongly_connected_components(whole) if len(c) > 1),
                        key=lambda c: min(t.n for t in c))
    for component in components:
        found = _classify(graph, component, budget)
        if found is not None:  # a strongly connected component always has a cycle; a spent budget raised
            anomaly, edges = found
            h.cases[anomaly].append(_cycle_case(graph, edges))


def _lost_appends(h: _History) -> Finding:
    """Acknowledged appends missing from the final read of their key."""
    name = "lost appends"
    final: dict[Any, tuple[Txn, tuple]] = {}
    for t in h.txns:
        if t.op.final and t.op.outcome == "ok":
            for f, key, value in _micro_ops(t.op):
                if f == "r":
                    final[key] = (t, _as_list(value))
    lost: list[tuple[Txn, Any, Any, Txn]] = []
    unread: list[Any] = []
    acked = 0
    for key, appenders in h.appenders.items():
        mine = [t for t in appenders if t.op.outcome == "ok" and not t.op.final]
        if not mine:
            continue
        if key not in final:
            unread.append(key)
            continue
        reader, values = final[key]
        held = set(values)
        for t in mine:
            for f, k, v in _micro_ops(t.op):
                if f == "append" and k == key:
                    acked += 1
                    if v not in held and t.op.complete_ns < reader.op.invoke_ns:
                        lost.append((t, key, v, reader))
    if lost:
        t, key, v, reader = lost[0]
        keys = len({k for _, k, _, _ in lost})
        return Finding(name, "violated", f"{len(lost)} of {acked} acknowledged appends "
                                         f"{'is' if len(lost) == 1 else 'are'} missing from the final read of "
                                         f"their key ({keys} key{'' if keys == 1 else 's'}); first: {v}, appended "
                                         f"to {key} by {_wording(t)}; the final read {reader.name} found {key} -> "
                                         f"{_short(_values_of(reader, key))} without it",
                       [t.op, reader.op], count=len(lost))
    if unread:
        return Finding(name, "unknown", f"no final read of {len(unread)} of {len(h.appenders)} keys appended to "
                                        f"(e.g. {unread[0]}): their appends cannot be checked")
    return Finding(name, "ok", f"all {acked} acknowledged appends to {len(h.appenders)} keys are in the final read")


def _values_of(t: Txn, key: Any) -> tuple:
    return next(_as_list(v) for f, k, v in _micro_ops(t.op) if f == "r" and k == key)


def _finding(anomaly: str, cases: list[Case], forbidden: bool, level: str) -> Finding:
    examples = " | ".join(c.why for c in cases[:EXAMPLES])
    more = f" (and {len(cases) - EXAMPLES} more)" if len(cases) > EXAMPLES else ""
    head = f"{GLOSS[anomaly]}: {len(cases)} found" if forbidden else \
        f"{GLOSS[anomaly]}: {len(cases)} found, which {level} allows"
    first = cases[0]
    ops = sorted({id(op): op for op in first.ops}.values(), key=lambda op: op.invoke_ns)
    return Finding(anomaly, "violated" if forbidden else "ok", f"{head}. {examples}{more}", ops, count=len(cases),
                   cycle=first.cycle, anomaly=anomaly)


def check_list_append(ops: list[Op], *, isolation: str | None = None, budget: int = SEARCH_BUDGET,
                      **_) -> list[Finding]:
    """Every anomaly the history shows, one finding each (violated if `isolation` forbids it, ok with a note if it
    allows it), then lost appends (with a final read phase), then a summary ("transactions")."""
    level = isolation or DEFAULT_ISOLATION
    if level not in FORBIDDEN:
        return [Finding("transactions", "unknown", f"unknown isolation level {level!r} (known: "
                                                   f"{', '.join(FORBIDDEN)})")]
    forbidden = FORBIDDEN[level] | ALWAYS_FORBIDDEN
    h = _History(ops)
    if h.reused:
        key, value, first, other = h.reused[0]
        return [Finding("transactions", "unknown", f"values appended more than once ({len(h.reused)}, e.g. "
                                                   f"{value} to {key} by {first.name} and {other.name}): a read "
                                                   f"cannot say which append it saw, so nothing can be inferred")]
    _intermediate_reads(h)
    _lost_updates(h)
    spent = Budget(budget)
    edges = 0
    try:
        graph = _dependencies(h, spent)
        edges = graph.edges
        _cycles(h, graph, spent)
        complete = True
    except BudgetSpent:
        complete = False
    order = [a for a, _, _ in CYCLE_SEARCHES] + ["G1a", "G1b", "internal inconsistency", "incompatible order",
                                                 "duplicates", "values never written"]
    findings = [_finding(a, h.cases[a], a in forbidden, level) for a in order if h.cases.get(a)]
    # Lost appends need a final read phase; other tools' histories often have none (as registers' lost writes).
    if any(op.final for op in ops):
        findings.append(_lost_appends(h))
    if h.cases.get("lost update"):
        findings.append(_finding("lost update", h.cases["lost update"], "lost update" in forbidden, level))
    findings.append(_summary(h, findings, level, edges, complete, budget))
    return findings


def _summary(h: _History, findings: list[Finding], level: str, edges: int, complete: bool, budget: int) -> Finding:
    committed = sum(1 for t in h.txns if t.committed)
    size = f"{committed} committed transactions of {len(h.txns)}, {edges} dependencies"
    bad = [f for f in findings if f.verdict == "violated" and f.anomaly is not None]
    allowed = [f for f in findings if f.verdict == "ok" and f.anomaly is not None]
    note = f"; {level} allows what else was found ({_counts(allowed)})" if allowed else ""
    if bad:
        return Finding("transactions", "violated", f"not {level}: {_counts(bad)} ({size}){note}")
    if not complete:
        return Finding("transactions", "unknown", f"search budget ({budget} steps) spent before every dependency "
                                                  f"cycle was examined ({size}){note}")
    return Finding("transactions", "ok", f"{level}: no anomaly it forbids ({size}){note}")


def _counts(findings: Iterable[Finding]) -> str:
    return ", ".join(f"{f.anomaly} x{f.count}" for f in findings)
