"""The node map of a torchrun cluster: which node (torchrun rank) runs which roles, from `cluster.toml`'s [cluster].

    [cluster]
    interface = "eth0"        # NIC for RPC and gloo (sets TP_SOCKET_IFNAME / GLOO_SOCKET_IFNAME); "" = by hostname
    rpc_timeout_s = 30.0      # deadline of every call to another node: a hung node fails its calls by then

    [[cluster.nodes]]         # one table per node kind, in rank order (or give `rank` / `host` explicitly)
    kind = "trainer"          # trainer | data | reanalysis | combined
    count = 1                 # this table stands for `count` nodes (reanalysis nodes usually come in numbers)
    host = "gpu-a"            # optional: hostname (the c10d rendezvous orders ranks by host, not by this file)
    devices = 8               # accelerators per node (0 = CPU only)
    trainers = 8              # DDP trainers on a trainer/combined node (each needs a device when devices > 0)
    actors = 0                # actor processes on a data/combined node
    reanalyzers = 0           # reanalyzer processes on a reanalysis/combined node (0 = auto; -1 on a combined node:
                              # none, all reanalysis on the reanalysis nodes)
    refreshers = 0            # priority refreshers on a data/combined node

Kinds: `trainer` hosts the DDP trainers (and the evaluator); `data` hosts replay, actors and refreshers;
`reanalysis` hosts reanalyzers; `combined` hosts all of them (the single-box layout). Exactly one node hosts
replay and one node the trainers (a combined node is both). Transport and topology only: nothing here knows RL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("trainer", "data", "reanalysis", "combined")
_ROLE_KEYS = ("trainers", "actors", "reanalyzers", "refreshers")
_NODE_KEYS = {"kind", "count", "host", "rank", "devices", *_ROLE_KEYS}
_CLUSTER_KEYS = {"interface", "rpc_timeout_s", "nodes"}
# which role counts each kind may set (replay and evaluator go with data / trainer)
_ALLOWED = {"trainer": {"trainers"}, "data": {"actors", "refreshers"}, "reanalysis": {"reanalyzers"},
            "combined": set(_ROLE_KEYS)}


class ClusterError(ValueError):
    """A [cluster] table that cannot describe this torchrun world; names the key, the value and what is expected."""


@dataclass(frozen=True)
class NodeSpec:
    """One node: its rank, kind and the processes it runs."""

    rank: int
    kind: str
    host: str = ""
    devices: int = 0
    trainers: int = 0
    actors: int = 0
    reanalyzers: int = 0
    refreshers: int = 0

    @property
    def name(self) -> str:
        """RPC name of the node's agent."""
        return f"node{self.rank}"

    @property
    def hosts_replay(self) -> bool:
        return self.kind in ("data", "combined")

    @property
    def hosts_trainers(self) -> bool:
        return self.kind in ("trainer", "combined")


@dataclass(frozen=True)
class ClusterSpec:
    """Every node of the run, indexed by rank."""

    nodes: tuple[NodeSpec, ...]
    interface: str = ""
    rpc_timeout_s: float = 30.0
    by_rank: dict[int, NodeSpec] = field(default_factory=dict, compare=False)

    def node(self, rank: int) -> NodeSpec:
        return self.by_rank[rank]

    @property
    def hosts(self) -> dict[int, str]:
        """Rank → host when nodes are mapped by hostname (every node names its `host`), else {}."""
        return {n.rank: n.host for n in self.nodes} if all(n.host for n in self.nodes) else {}

    @property
    def replay_node(self) -> NodeSpec:
        return next(n for n in self.nodes if n.hosts_replay)

    @property
    def trainer_node(self) -> NodeSpec:
        return next(n for n in self.nodes if n.hosts_trainers)

    def total(self, role: str) -> int:
        """Processes of a role kind over the whole cluster (role: trainers, actors, reanalyzers, refreshers) as
        the file sets them (a count left at 0 = auto is counted as 0, a combined node's -1 = none too)."""
        return sum(max(0, getattr(n, role)) for n in self.nodes)


def _int(value: Any, key: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ClusterError(f"{key} = {value!r}: expected an integer >= {low}")
    return value


def _expand(raw_nodes: list[Any]) -> list[dict[str, Any]]:
    """Validate each [[cluster.nodes]] table's keys and kinds and repeat it `count` times (keys named by position)."""
    out = []
    for i, table in enumerate(raw_nodes):
        where = f"cluster.nodes[{i}]"
        if not isinstance(table, dict):
            raise ClusterError(f"{where}: expected a table ([[cluster.nodes]]), got {table!r}")
        unknown = sorted(set(table) - _NODE_KEYS)
        if unknown:
            raise ClusterError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_NODE_KEYS))}")
        kind = table.get("kind")
        if kind not in KINDS:
            raise ClusterError(f"{where}.kind = {kind!r}: expected one of {', '.join(KINDS)}")
        for key in _ROLE_KEYS:
            if key in table and key not in _ALLOWED[kind] and table[key]:
                raise ClusterError(f"{where}.{key} = {table[key]!r}: a {kind} node runs no {key} "
                                   f"(it may set {', '.join(sorted(_ALLOWED[kind]))})")
        count = _int(table.get("count", 1), f"{where}.count", 1)
        if count > 1 and ("rank" in table or "host" in table):
            raise ClusterError(f"{where}: 'rank' and 'host' name one node; use count = 1 with them")
        for _ in range(count):
            out.append({**table, "_where": where})
    return out


def _node(entry: dict[str, Any], rank: int) -> NodeSpec:
    where, kind = entry["_where"], entry["kind"]
    values = {key: _int(entry.get(key, 0), f"{where}.{key}", -1 if (key, kind) == ("reanalyzers", "combined") else 0)
              for key in ("devices", *_ROLE_KEYS)}
    if kind in ("trainer", "combined") and values["trainers"] == 0:
        values["trainers"] = max(1, values["devices"])
    if kind in ("trainer", "combined") and values["devices"] and values["trainers"] > values["devices"]:
        raise ClusterError(f"{where}.trainers = {values['trainers']}: the node has {values['devices']} devices "
                           f"(one DDP trainer per device)")
    host = entry.get("host", "")
    if not isinstance(host, str):
        raise ClusterError(f"{where}.host = {host!r}: expected a hostname string")
    return NodeSpec(rank=rank, kind=kind, host=host, **values)


def _ranks(entries: list[dict[str, Any]], world_size: int) -> list[int]:
    """Rank of each expanded entry: explicit `rank` where given, the remaining ranks in file order."""
    explicit = {}
    for i, entry in enumerate(entries):
        if "rank" in entry:
            rank = _int(entry["rank"], f"{entry['_where']}.rank")
            if rank >= world_size:
                raise ClusterError(f"{entry['_where']}.rank = {rank}: the torchrun world has ranks 0..{world_size - 1}")
            if rank in explicit.values():
                raise ClusterError(f"{entry['_where']}.rank = {rank}: another node already has rank {rank}")
            explicit[i] = rank
    free = iter(r for r in range(world_size) if r not in explicit.values())
    return [explicit[i] if i in explicit else next(free) for i in range(len(entries))]


def parse_cluster(table: dict[str, Any], world_size: int, source: str = "cluster.toml") -> ClusterSpec:
    """The node map for a torchrun world of `world_size` nodes; ClusterError (naming the key) if it cannot be."""
    if not isinstance(table, dict):
        raise ClusterError(f"{source}: [cluster] must be a table")
    unknown = sorted(set(table) - _CLUSTER_KEYS)
    if unknown:
        raise ClusterError(f"{source}: unknown key cluster.{unknown[0]}; allowed: {', '.join(sorted(_CLUSTER_KEYS))}")
    raw = table.get("nodes")
    if not isinstance(raw, list) or not raw:
        raise ClusterError(f"{source}: cluster.nodes is missing: add one [[cluster.nodes]] table per node kind")
    entries = _expand(raw)
    if len(entries) != world_size:
        raise ClusterError(f"{source}: cluster.nodes describes {len(entries)} nodes (counts included) but torchrun "
                           f"started {world_size} (--nnodes); make them equal")
    named = [bool(e.get("host")) for e in entries]
    if any(named) and not all(named):
        raise ClusterError(f"{source}: {sum(named)} of {len(entries)} nodes name a host: name every node's host "
                           f"(nodes mapped by hostname, e.g. under the c10d rendezvous) or none (by rank)")
    ranks = _ranks(entries, world_size)
    nodes = tuple(sorted((_node(e, r) for e, r in zip(entries, ranks, strict=True)), key=lambda n: n.rank))
    _check_roles(nodes, source)
    interface = table.get("interface", "")
    timeout = table.get("rpc_timeout_s", 30.0)
    if not isinstance(interface, str):
        raise ClusterError(f"{source}: cluster.interface = {interface!r}: expected a network interface name")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ClusterError(f"{source}: cluster.rpc_timeout_s = {timeout!r}: expected seconds > 0")
    return ClusterSpec(nodes, interface, float(timeout), {n.rank: n for n in nodes})


def _check_roles(nodes: tuple[NodeSpec, ...], source: str) -> None:
    replay = [n.rank for n in nodes if n.hosts_replay]
    trainers = [n.rank for n in nodes if n.hosts_trainers]
    if len(replay) != 1:
        raise ClusterError(f"{source}: {len(replay)} nodes host replay (ranks {replay}): exactly one data or "
                           f"combined node must")
    if len(trainers) != 1:
        raise ClusterError(f"{source}: {len(trainers)} nodes host trainers (ranks {trainers}): exactly one trainer "
                           f"or combined node must (DDP stays inside it)")
    if not any(n.kind == "reanalysis" or (n.kind == "combined" and n.reanalyzers >= 0) for n in nodes):
        raise ClusterError(f"{source}: no node runs reanalyzers: add a reanalysis node or let the combined node run "
                           f"its own (cluster.nodes[..].reanalyzers >= 0)")
    for role, kinds in (("actors", "a data or combined node"),):
        if sum(getattr(n, role) for n in nodes) == 0:
            raise ClusterError(f"{source}: no node runs {role}: set cluster.nodes[..].{role} on {kinds}")

