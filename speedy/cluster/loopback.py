"""A whole torchrun cluster on this one machine, over 127.0.0.1: one `torchrun` launcher per node started exactly as
on separate machines (static rendezvous, `--max-restarts=0`, each launcher in a session of its own), for the
cluster tests and tools/cluster_scaling.py. Transport only: what each node runs is the script's business.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from speedy.cluster.ddp import LOOPBACK, free_port


def torchrun_command(world: int, rank: int, port: int, script: Path, args: list[str], c10d: bool = False) -> list[str]:
    """The launch line of node `rank` of a `world`-node loopback cluster whose rendezvous store listens on `port`:
    the static rendezvous (`--node-rank`), or with `c10d` the c10d one (ranks by its own order; launcher 0 hosts
    the store)."""
    if c10d:
        rendezvous = ["--rdzv-backend=c10d", f"--rdzv-endpoint={LOOPBACK}:{port}", "--rdzv-id=speedy",
                      f"--rdzv-conf=is_host={int(rank == 0)}"]
    else:
        rendezvous = ["--rdzv-backend=static", f"--master-addr={LOOPBACK}", f"--master-port={port}",
                      f"--node-rank={rank}"]
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={world}", "--nproc-per-node=1",
            "--max-restarts=0", *rendezvous, str(script), *args]


def start_loopback_cluster(world: int, script: Path, args: list[str], log_dir: Path, cwd: Path,
                           env: dict[str, str] | None = None, c10d: bool = False,
                           node_env: list[dict[str, str]] | None = None) -> list[subprocess.Popen]:
    """Start `world` launchers of `script args` (launcher i's output appended to log_dir/node<i>.log); returns
    them in launch order. One thread per process (OMP_NUM_THREADS=1) unless `env` says otherwise; `node_env[i]`:
    launcher i's own variables (e.g. SPEEDY_HOSTNAME, to stand for another machine)."""
    port = free_port()
    nodes = []
    for i in range(world):
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), **(node_env[i] if node_env else {})}
        with (log_dir / f"node{i}.log").open("a") as log:  # the child keeps its own copy of the descriptor
            nodes.append(subprocess.Popen(torchrun_command(world, i, port, script, args, c10d), env=full_env,
                                          cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return nodes


def signal_node(node: subprocess.Popen, sig: int) -> None:
    """`sig` to a whole node: its launcher, the worker (torchrun puts it in a session of its own) and the worker's
    processes. SIGKILL is what a dead machine looks like, SIGSTOP a hung one (every process frozen, sockets open)."""
    try:
        processes = [psutil.Process(node.pid), *psutil.Process(node.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL a whole node (see `signal_node`)."""
    signal_node(node, signal.SIGKILL)


def stop_cluster(nodes: list[subprocess.Popen]) -> None:
    """Kill every node still running (e.g. launchers waiting in torchrun's exit barrier for a lost node) and reap
    them all."""
    for node in nodes:
        if node.poll() is None:
            kill_node(node)
        node.wait()


def run_cluster(nodes: list[subprocess.Popen], timeout_s: float) -> list[int]:
    """Wait up to `timeout_s` in all for every node to exit, kill what is left (`stop_cluster`); their exit codes
    (negative: killed by that signal)."""
    deadline = time.monotonic() + timeout_s
    try:
        for node in nodes:
            node.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop_cluster(nodes)
    return [node.returncode for node in nodes]
