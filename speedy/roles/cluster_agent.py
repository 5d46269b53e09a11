"""Node agents of a torchrun cluster: reanalysis scaled out over machines, every role's code unchanged.

Layout supported today: node 0 is a `combined` node (replay, actors, refreshers, trainer, evaluator and its own
reanalyzers: the single-box agent of `launch.py`); every other node is a `reanalysis` node. Reanalysis is where
EfficientZero spends > 99 % of its search work, so this is the part that must scale. Reanalyzers get global
indices: node 0's first, then each reanalysis node's in rank order.

Every node creates the same shared memory as a single box (`create_shared_memory`, same names), so a role process
reads and writes local rings and never learns where its peer lives. The agents bridge them (speedy/cluster/bridge):

    node 0 replay ─ samples{j} ─▶ [Forwarder] ══RPC══▶ node k: samples{j} ─▶ reanalyzer j
    node 0 trainer ◀─ batches.{j} ◀══RPC══ [Forwarder] ◀─ batches.{j} ─ reanalyzer j on node k
    node 0 frame stores, weight slots, counters ══RPC (pulled by node k every `PULL_S`)══▶ node k's replicas

Frames are replicated once per node (each new frame crosses each link once); samples and batches carry ids and
targets, never pixels. A reanalysis node that dies is reported and left out: replay's stream to it stops at a
full ring and training goes on with the others (RPC cannot re-admit it until the run is resumed). At the end
node 0 tells every node to stop; a reanalysis node also stops when node 0 stops answering.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speedy.cluster import bridge
from speedy.cluster.bootstrap import TorchrunWorld, init_rpc, set_interface
from speedy.cluster.nodes import ClusterError, ClusterSpec
from speedy.config import Config
from speedy.metrics import MetricsWriter
from speedy.roles.board import Board
from speedy.roles.context import LATEST_WEIGHTS, TARGET_WEIGHTS, RolePlan, batch_mux
from speedy.shm.frames import FrameStore
from speedy.shm.mux import mux_writer
from speedy.shm.ring import Ring
from speedy.shm.weights import WeightSlot

PULL_S = 0.2  # how often a reanalysis node pulls new frames, weights and counters from node 0
FRAMES_PER_PULL = 4096
HEAD = "node0"


def reanalyzer_homes(spec: ClusterSpec, head_local: int) -> dict[int, int]:
    """Global reanalyzer index → node rank: node 0's `head_local` first, then each reanalysis node's in rank
    order (a reanalysis node that sets no count runs one)."""
    homes = {j: 0 for j in range(head_local)}
    for node in spec.nodes:
        if node.kind == "reanalysis":
            for _ in range(node.reanalyzers or 1):
                homes[len(homes)] = node.rank
    return homes


def check_supported(spec: ClusterSpec) -> None:
    """Refuse layouts the agents cannot run yet, naming what is missing."""
    if spec.node(0).kind != "combined" or any(n.kind != "reanalysis" for n in spec.nodes[1:]):
        kinds = [n.kind for n in spec.nodes]
        raise ClusterError(f"node kinds {kinds}: today node 0 must be 'combined' and every other node "
                           f"'reanalysis' (separate trainer and data nodes are not wired yet)")


class HeadLink:
    """Node 0's side: forwards remote reanalyzers' samples, takes their batches, serves frames/weights/counters."""

    def __init__(self, spec: ClusterSpec, homes: dict[int, int], say: Any) -> None:
        self.spec, self.homes, self.say = spec, homes, say
        self.trainers = spec.node(0).trainers
        self.forwarders: list[bridge.Forwarder] = []
        self.lost: set[str] = set()
        self.stopped = False

    def remote(self) -> dict[int, int]:
        return {j: rank for j, rank in self.homes.items() if rank != 0}

    def plan(self, plan: RolePlan) -> RolePlan:
        return replace(plan, reanalyzers=len(self.homes))

    def local_roles(self, plan: RolePlan) -> list[tuple[str, int]]:
        roles = [("replay", 0), ("evaluator", 0)] + [("trainer", t) for t in range(plan.trainers)]
        roles += [("reanalyzer", j) for j, rank in self.homes.items() if rank == 0]
        roles += [("refresher", j) for j in range(plan.refreshers)]
        roles += [("actor", i) for i in range(plan.actors)]
        return roles

    def start(self, run_id: str, owned: list, board: Board) -> None:
        slots, stores = _slots_and_stores(owned)
        bridge.register_service("weights", lambda name, have: _weights_reply(slots[name], have))
        bridge.register_service("frames", lambda i, first, most: _frames_reply(stores[i], first, most))
        bridge.register_service("counters", lambda: _counters(board))
        for j, rank in self.remote().items():
            for t in range(self.trainers):
                bridge.register_inbound(f"{batch_mux(t)}.{j}", mux_writer(run_id, batch_mux(t), j))
            reader = Ring.attach(run_id, f"samples{j}").reader()
            self.forwarders.append(bridge.Forwarder(reader, f"node{rank}", f"samples{j}", self.spec.rpc_timeout_s,
                                                    batch=4, on_lost=self._lost, follow_restarts=True).start())

    def _lost(self, peer: str, err: Exception) -> None:
        if peer not in self.lost:
            self.lost.add(peer)
            self.say(f"[agent] lost {peer}: {str(err).splitlines()[0][:200]}; training goes on without it",
                     flush=True)

    def stop(self) -> None:
        """Stop forwarding, then tell every node still there to stop (in that order: a stopped node no longer
        answers, which a forwarder would report as a loss). Once: later calls do nothing."""
        if self.stopped:
            return
        self.stopped = True
        for forwarder in self.forwarders:
            forwarder.stop(2.0)
        for rank in sorted(set(self.remote().values())):
            if f"node{rank}" not in self.lost:
                bridge.notify_peer(f"node{rank}", "stop", 5.0)


def _slots_and_stores(owned: list) -> tuple[dict[str, WeightSlot], list[FrameStore]]:
    """The node's weight slots by name ('weights', 'target') and its frame stores in actor order."""
    slots = {h.seg.path.name.rsplit("_", 1)[-1]: h for h in owned if isinstance(h, WeightSlot)}
    return slots, [h for h in owned if isinstance(h, FrameStore)]


def _weights_reply(slot: WeightSlot, have: int) -> tuple[int, torch.Tensor]:
    """(version, flat uint8 weights) of `slot` if newer than `have`, else (version, empty tensor)."""
    version = slot.latest_version()
    if version <= have:
        return version, torch.empty(0, dtype=torch.uint8)
    buf = np.empty(slot.nbytes, np.uint8)
    version = slot.read_into(buf)
    return version, torch.from_numpy(buf)


def _frames_reply(store: FrameStore, first: int, most: int) -> tuple[int, torch.Tensor]:
    """Frames from id `first` on (or the oldest still held, if `first` was evicted), at most `most` of them."""
    start = max(first, store.oldest_id())
    end = min(store.next_id, start + most)
    if end <= start:
        return start, torch.empty(0, dtype=torch.uint8)
    return start, torch.from_numpy(store.get(np.arange(start, end, dtype=np.int64)))


def _counters(board: Board) -> torch.Tensor:
    """[train steps, stop flag, env steps of actor 0, 1, ...] of node 0's board."""
    actors = board.column("env_steps", "actor")
    return torch.tensor([board.get("trainer", "train_steps"), float(board.stopping), *actors.tolist()],
                        dtype=torch.float64)


class ReanalysisLink:
    """A reanalysis node's side: takes samples for its reanalyzers, forwards their batches, pulls replicas."""

    def __init__(self, spec: ClusterSpec, homes: dict[int, int], rank: int, say: Any) -> None:
        self.spec, self.rank, self.say = spec, rank, say
        self.mine = [j for j, home in homes.items() if home == rank]
        self.forwarders: list[bridge.Forwarder] = []
        self.head_lost: Exception | None = None
        self.versions = {LATEST_WEIGHTS: -1, TARGET_WEIGHTS: -1}
        self.pulled = {"frames": 0, "weights": 0, "counters": 0}  # bytes pulled from node 0
        self.train_steps = 0  # node 0's, as last pulled
        self._stop = threading.Event()
        self._puller: threading.Thread | None = None

    def local_roles(self) -> list[tuple[str, int]]:
        return [("reanalyzer", j) for j in self.mine]

    def start(self, run_id: str, owned: list, board: Board) -> None:
        for j in self.mine:
            bridge.register_inbound(f"samples{j}", Ring.attach(run_id, f"samples{j}").writer())
            for t in range(self.spec.node(0).trainers):  # a reanalyzer's batches to each of node 0's DDP trainers
                channel = f"{batch_mux(t)}.{j}"
                reader = Ring.attach(run_id, channel).reader()
                self.forwarders.append(bridge.Forwarder(reader, HEAD, channel, self.spec.rpc_timeout_s, batch=4,
                                                        on_lost=self._lost, follow_restarts=True).start())
        slots, stores = _slots_and_stores(owned)
        self._puller = threading.Thread(target=self._pull_loop, args=(slots, stores, board), daemon=True,
                                        name="pull-from-head")
        self._puller.start()

    def _lost(self, peer: str, err: Exception) -> None:
        if self.head_lost is None:
            self.head_lost = err

    def _pull_loop(self, slots: dict[str, WeightSlot], stores: list[FrameStore], board: Board) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and self.head_lost is None:
            try:
                self.pull_once(slots, stores, board)
            except bridge.ServiceNotReadyError as err:  # node 0 is still starting: wait for it, within the deadline
                if time.monotonic() - started > self.spec.rpc_timeout_s:
                    self.head_lost = err
                    return
            except Exception as err:  # noqa: BLE001 - node 0 gone or hung: this node stops
                self.head_lost = err
                return
            self._stop.wait(PULL_S)

    def pull_once(self, slots: dict[str, WeightSlot], stores: list[FrameStore], board: Board) -> None:
        timeout = self.spec.rpc_timeout_s
        for i, store in enumerate(stores):
            first, frames = bridge.call(HEAD, "frames", i, store.next_id, FRAMES_PER_PULL, timeout_s=timeout)
            if first > store.next_id:
                store.skip_to(first)
            if frames.numel():
                store.append(frames.numpy())
                self.pulled["frames"] += frames.numel() * frames.element_size()
        for name, slot in slots.items():
            version, flat = bridge.call(HEAD, "weights", name, self.versions[name], timeout_s=timeout)
            if flat.numel():
                slot.publish(flat.numpy(), version)
                self.versions[name] = version
                self.pulled["weights"] += flat.numel()
        reply = bridge.call(HEAD, "counters", timeout_s=timeout)
        self.pulled["counters"] += reply.numel() * reply.element_size()
        counters = reply.tolist()
        self.train_steps = int(counters[0])
        board.row("trainer").set("train_steps", counters[0])
        for i, steps in enumerate(counters[2:]):
            board.row(f"actor{i}").set("env_steps", steps)
        if counters[1]:
            self._stop.set()

    def link_bytes(self) -> dict[str, int]:
        """Payload bytes on this node's link to node 0 so far, by what they carry (RPC framing not counted):
        frames, weights and counters pulled, samples delivered here, batches forwarded to the trainers."""
        inbound = bridge.inbound_bytes()
        return {"frames_in": self.pulled["frames"], "weights_in": self.pulled["weights"],
                "counters_in": self.pulled["counters"],
                "samples_in": sum(inbound.get(f"samples{j}", 0) for j in self.mine),
                "batches_out": sum(f.stats.bytes for f in self.forwarders)}

    def told_to_stop(self) -> bool:
        """Node 0 ended the run: it said so (the 'stop' event) or its counters carried the stop flag."""
        return self._stop.is_set() or bridge.wait_event("stop", 0)

    def should_stop(self) -> bool:
        return self.told_to_stop() or self.head_lost is not None

    def stop(self) -> None:
        self._stop.set()
        for forwarder in self.forwarders:
            forwarder.stop(2.0)
        if self._puller is not None:
            self._puller.join(5.0)


def run_reanalysis_node(config: Config, run_dir: Path, spec: ClusterSpec, world: TorchrunWorld, head_local: int,
                        say: Any = print) -> int:
    """Serve node 0 as a reanalysis node until it says stop (0) or is lost (1)."""
    import os
    import uuid

    from speedy.roles.launch import Supervisor, create_shared_memory, plan_roles
    from speedy.shm.segment import cleanup_stale

    homes = reanalyzer_homes(spec, head_local)
    plan = replace(plan_roles(config), reanalyzers=len(homes))
    link = ReanalysisLink(spec, homes, world.rank, say)
    run_id = f"r{os.getpid()}{uuid.uuid4().hex[:6]}"
    cleanup_stale()
    owned = create_shared_memory(config, plan, run_id)
    board: Board = owned[0]
    supervisor = Supervisor(config, plan, run_id, run_dir, roles=link.local_roles())
    say(f"[node{world.rank}] reanalysis node: reanalyzers {link.mine} for {HEAD}", flush=True)
    traffic = MetricsWriter(run_dir, "link", tensorboard=False)
    next_write = time.monotonic()
    try:
        link.start(run_id, owned, board)
        supervisor.start_all()
        while not link.should_stop():
            supervisor.check(board, say)
            if time.monotonic() >= next_write:
                traffic.write(link.train_steps, {"peer": HEAD, **link.link_bytes()})
                next_write = time.monotonic() + config.run.log_interval_s
            time.sleep(0.2)
    finally:
        ended = link.told_to_stop()  # before link.stop(), which sets the same flag
        board.set_control("stop", 1)
        supervisor.stop()
        link.stop()
        traffic.write(link.train_steps, {"peer": HEAD, **link.link_bytes()})
        traffic.close()
        for handle in reversed(owned):
            handle.close()
    if link.train_steps:
        total = sum(link.link_bytes().values())
        say(f"[node{world.rank}] link to {HEAD}: {total / link.train_steps / 1024:.1f} KiB per training step "
            f"({', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in link.link_bytes().items())})", flush=True)
    if link.head_lost is not None and not ended:  # node 0 closing its end after saying stop is no loss
        say(f"[node{world.rank}] {HEAD} is gone ({str(link.head_lost).splitlines()[0][:200]}); stopped", flush=True)
        return 1
    say(f"[node{world.rank}] stopped: {HEAD} ended the run", flush=True)
    return 0


def run_cluster_node(config: Config, run_dir: Path, spec: ClusterSpec, world: TorchrunWorld, say: Any = print,
                     resume: bool = False) -> int:
    """Entry of `run.py` under torchrun: join RPC, then run node 0 (combined) or a reanalysis node. With `resume`,
    node 0 continues the stopped run in `run_dir` (checkpoint, replay, frames: speedy/roles/resume.py); a
    reanalysis node holds nothing to restore (it replicates node 0's frames and weights from wherever they are).
    Exit codes: 0 done, 1 lost node 0 / a run failure, 2 a checkpoint that cannot be resumed."""
    import os

    from speedy.checkpoint import CheckpointError
    from speedy.roles.launch import RunFailedError, plan_roles, run_single_box

    check_supported(spec)
    # every node sizes its channels for node 0's DDP trainers (reanalyzers write one ring per trainer)
    config = replace(config, roles=replace(config.roles, trainers=spec.node(0).trainers))
    set_interface(spec.interface)
    init_rpc(world, spec.rpc_timeout_s)
    head_local = max(0, spec.node(0).reanalyzers or plan_roles(config).reanalyzers)  # -1: none on node 0
    code = 0
    try:
        if world.rank == 0:
            link = HeadLink(spec, reanalyzer_homes(spec, head_local), say)
            try:
                summary = run_single_box(config, run_dir, link=link, resume=resume)
            except (CheckpointError, MemoryError, RunFailedError) as err:
                code = 2 if isinstance(err, CheckpointError) else 1
                say(f"error: {'cannot resume: ' if code == 2 else ''}{err}", flush=True)
                link.stop()  # the other nodes stop now rather than at their deadline
            else:
                say(f"[node0] {summary.train_steps} training steps; lost nodes: {sorted(link.lost) or 'none'}",
                    flush=True)
        else:
            code = run_reanalysis_node(config, run_dir, spec, world, head_local, say)
    finally:
        from torch.distributed import rpc

        rpc.shutdown(graceful=False)
    os._exit(code)  # no torchrun exit barrier wait on RPC threads: everything is written

