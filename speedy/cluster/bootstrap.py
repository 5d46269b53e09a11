"""Start-up of one node agent under torchrun: who am I, which interface, and the RPC connection to the others.

Launch (one agent process per node; see ../shared/DESIGN.md §2 for why these flags):

    torchrun --nnodes=N --nproc-per-node=1 --max-restarts=0 --rdzv-backend=static \\
             --master-addr=TRAINER_HOST --master-port=P --node-rank=R run.py

`--max-restarts` must be 0 (a restart re-runs the static `init_rpc` and fails) and there is one process per node
(the agent spawns the node's roles itself). Both are checked here, with messages that say what to change.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

from speedy.cluster.nodes import ClusterError


@dataclass(frozen=True)
class TorchrunWorld:
    """The torchrun variables of this process."""

    rank: int  # this node's rank in the node map (cluster.toml); torchrun's unless nodes are mapped by host
    world_size: int
    master_addr: str
    master_port: int
    restart_count: int
    rpc_rank: int = -1  # torchrun's rank (the RPC group's); -1: the same as `rank`


def torchrun_world(env: dict[str, str] | None = None) -> TorchrunWorld | None:
    """This process's torchrun world, or None when not started by torchrun (single-box mode).
    ClusterError for a torchrun launch this system cannot run (several processes per node, restarts)."""
    env = dict(os.environ if env is None else env)
    if "TORCHELASTIC_RUN_ID" not in env and "GROUP_RANK" not in env:
        return None
    local = int(env.get("LOCAL_WORLD_SIZE", "1"))
    if local != 1:
        raise ClusterError(f"torchrun started {local} processes on this node: use --nproc-per-node=1 (the node "
                           f"agent starts the node's role processes itself)")
    restarts = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts:
        raise ClusterError("torchrun restarted the node agents (--max-restarts > 0): RPC cannot re-admit a node; "
                           "use --max-restarts=0 and `run.py --resume` after a failure")
    try:
        return TorchrunWorld(int(env["RANK"]), int(env["WORLD_SIZE"]), env["MASTER_ADDR"], int(env["MASTER_PORT"]),
                             restarts)
    except KeyError as missing:
        raise ClusterError(f"torchrun variable {missing} is not set") from None


HOSTNAME_ENV = "SPEEDY_HOSTNAME"  # this node's name for cluster.toml's `host` keys (default: the machine's hostname)


def this_host() -> str:
    import socket

    return os.environ.get(HOSTNAME_ENV) or socket.gethostname()


def place_node(world: TorchrunWorld, hosts: dict[int, str], host: str) -> TorchrunWorld:
    """This node's rank in the node map. Without `host` keys (`hosts` empty) it is torchrun's rank, as the static
    rendezvous assigns it (`--node-rank`). With them (every node names its host: `hosts` = node-map rank → host)
    it is the rank of the node whose host is `host`, whatever rank torchrun gave: the c10d rendezvous orders ranks
    by (hostname, pid), not by the file. ClusterError if `host` is named by no node or by several."""
    if not hosts:
        return world
    mine = [rank for rank, name in hosts.items() if name in (host, host.split(".", 1)[0])]
    if len(mine) != 1:
        raise ClusterError(f"this node's host {host!r} is named by {len(mine)} cluster.nodes tables "
                           f"(hosts: {', '.join(sorted(set(hosts.values())))}): exactly one must name it "
                           f"(set {HOSTNAME_ENV} to give a node another name)")
    return TorchrunWorld(mine[0], world.world_size, world.master_addr, world.master_port, world.restart_count,
                         rpc_rank=world.rank)


def set_interface(interface: str) -> None:
    """Route TensorPipe (RPC) and gloo over `interface` (unset: they follow the hostname)."""
    if interface:
        os.environ["TP_SOCKET_IFNAME"] = interface
        os.environ["GLOO_SOCKET_IFNAME"] = interface


def init_rpc(world: TorchrunWorld, timeout_s: float, threads: int = 8) -> None:
    """Join the cluster's RPC group as `node<rank>` (its node-map rank; the group's own rank is torchrun's), with
    the rendezvous through torchrun's store (MASTER_ADDR/PORT, env://)."""
    from torch.distributed import rpc

    options = rpc.TensorPipeRpcBackendOptions(num_worker_threads=threads, rpc_timeout=timeout_s)
    rank = world.rank if world.rpc_rank < 0 else world.rpc_rank
    rpc.init_rpc(f"node{world.rank}", rank=rank, world_size=world.world_size, rpc_backend_options=options)


def leave_rpc_and_exit(code: int, timeout_s: float = 15.0, say: Any = print) -> NoReturn:
    """Leave the RPC group and end this process with exit code `code`, whatever RPC does.

    `rpc.shutdown(graceful=False)` waits for the requests this node is still serving; a peer that hangs or dies in
    the middle of one can hold it there for good, and torchrun's other launchers would then wait in their exit
    barrier (300 s) for this one. Everything the node had to write is written before this is called, so past
    `timeout_s` the process exits anyway (saying so). `os._exit`: no interpreter teardown racing RPC's threads."""
    from torch.distributed import rpc

    def force_exit() -> None:
        say(f"[agent] RPC shutdown took over {timeout_s:.0f} s; exiting without it", flush=True)
        os._exit(code)

    watchdog = threading.Timer(timeout_s, force_exit)
    watchdog.daemon = True
    watchdog.start()
    try:
        rpc.shutdown(graceful=False)
    finally:
        os._exit(code)
