"""Start-up of one node agent under torchrun: who am I, which interface, and the RPC connection to the others.

Launch (one agent process per node; see ../shared/DESIGN.md §2 for why these flags):

    torchrun --nnodes=N --nproc-per-node=1 --max-restarts=0 --rdzv-backend=static \\
             --master-addr=TRAINER_HOST --master-port=P --node-rank=R run.py

`--max-restarts` must be 0 (a restart re-runs the static `init_rpc` and fails) and there is one process per node
(the agent spawns the node's roles itself). Both are checked here, with messages that say what to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from speedy.cluster.nodes import ClusterError


@dataclass(frozen=True)
class TorchrunWorld:
    """The torchrun variables of this process."""

    rank: int
    world_size: int
    master_addr: str
    master_port: int
    restart_count: int


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


def set_interface(interface: str) -> None:
    """Route TensorPipe (RPC) and gloo over `interface` (unset: they follow the hostname)."""
    if interface:
        os.environ["TP_SOCKET_IFNAME"] = interface
        os.environ["GLOO_SOCKET_IFNAME"] = interface


def init_rpc(world: TorchrunWorld, timeout_s: float, threads: int = 8) -> None:
    """Join the cluster's RPC group as `node<rank>` (rendezvous through torchrun's store: MASTER_ADDR/PORT, env://)."""
    from torch.distributed import rpc

    options = rpc.TensorPipeRpcBackendOptions(num_worker_threads=threads, rpc_timeout=timeout_s)
    rpc.init_rpc(f"node{world.rank}", rank=world.rank, world_size=world.world_size, rpc_backend_options=options)
