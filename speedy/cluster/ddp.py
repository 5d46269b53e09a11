"""The DDP trainers' process group: local to the node that hosts them, never the torchrun world.

Trainer 0 holds the group's TCPStore on 127.0.0.1 (the port the node agent picked); every trainer joins it with
gloo (CPU, or CUDA with fewer devices than trainers, which NCCL refuses) or NCCL (one CUDA device per trainer).
A reanalysis node never takes part in a collective, so a lost one cannot stall the trainers (../shared/DESIGN.md §2).

Lockstep: before each step every trainer says whether it goes on (`agree`), on a CPU gloo group even under NCCL; a
trainer that stops (run stopping, last step done) says so, and all of them stop after the same step, so none waits
in an all-reduce for a peer that left. A peer that dies makes the others' next collective fail within `timeout_s`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the trainers' store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def trainer_device(device: torch.device, rank: int) -> torch.device:
    """The device of DDP trainer `rank`: CUDA devices are dealt out round-robin; the CPU is shared."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", rank % torch.cuda.device_count())


def backend_for(device: torch.device, world_size: int) -> str:
    """'nccl' when every trainer has a CUDA device of its own, else 'gloo'."""
    if device.type == "cuda" and torch.cuda.device_count() >= world_size and dist.is_nccl_available():
        return "nccl"
    return "gloo"


@dataclass
class TrainerGroup:
    """Membership of one DDP trainer in its node's group."""

    rank: int
    world_size: int
    backend: str
    control: dist.ProcessGroup  # CPU gloo group for the per-step agreement

    def agree(self, go_on: bool) -> bool:
        """All trainers go on with one more step only if every one of them does (a blocking all-reduce)."""
        flag = torch.tensor([0 if go_on else 1], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
        return int(flag.item()) == 0

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def join_trainer_group(rank: int, world_size: int, port: int, device: torch.device,
                       timeout_s: float = 120.0) -> TrainerGroup:
    """Join (rank 0: create) the trainers' process group on 127.0.0.1:`port`. `device` is this trainer's."""
    store = dist.TCPStore(LOOPBACK, port, world_size, is_master=rank == 0, timeout=timedelta(seconds=timeout_s))
    backend = backend_for(device, world_size)
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    return TrainerGroup(rank, world_size, backend, control)
