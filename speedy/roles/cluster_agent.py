"""Node agents of a torchrun cluster: the single-box roles spread over machines, every role's code unchanged.

Where things live (`Placement`): node 0 hosts the trainers (a `trainer` or `combined` node) and the evaluator, and
runs the run's agent loop (launch.py's `run_single_box` with a `NodeLink`): progress, stop conditions, final
checkpoint. Replay, actors and refreshers live on the data node (node 0 itself when it is `combined`), reanalyzers
on the reanalysis nodes (and on a combined node). Reanalyzers get global indices: node 0's first, then each other
node's in rank order.

Every node creates the same shared memory as a single box (`create_shared_memory`, same names), so a role process
reads and writes local rings and never learns where its peer lives. The agents bridge them
(speedy/cluster/bridge.py):

    samples{j}          data node (replay)  ══RPC══▶  reanalyzer j's node
    batches{t}.{j}      reanalyzer j's node ══RPC══▶  node 0 (DDP trainer t)
    priorities.{t}      node 0 (trainer t)  ══RPC══▶  data node (replay)
    frame stores        pulled every PULL_S from the data node by every other node (each new frame crosses each
                        link once; samples and batches carry ids and targets, never pixels)
    weight slots        pulled from node 0 when their version changes
    board               node 0 pulls each node's own rows (progress, profile, env steps for checkpoints); every
                        other node pulls node 0's whole board (controls: stop, pause; trainer steps; env steps)

A reanalysis node that dies or hangs is reported and left out (a forwarder's call or a pull past
`cluster.rpc_timeout_s`): replay's stream to it stops at a full ring and training goes on with the others (RPC
cannot re-admit it until the run is resumed). Losing node 0 or the data node ends the run on every node. At the
end node 0 tells every node still there to stop.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from speedy.cluster import bridge
from speedy.cluster.bootstrap import TorchrunWorld, init_rpc, leave_rpc_and_exit, set_interface
from speedy.cluster.nodes import ClusterError, ClusterSpec
from speedy.config import Config
from speedy.device_monitor import DeviceMonitor, device_report
from speedy.metrics import MetricsWriter
from speedy.roles.board import CONTROLS, Board
from speedy.roles.context import RolePlan, batch_mux, role_name
from speedy.roles.resume import ResumeState
from speedy.shm.frames import FrameStore
from speedy.shm.ring import Ring
from speedy.shm.weights import WeightSlot

PULL_S = 0.2  # how often a node pulls frames, weights and board rows from their home nodes
FRAMES_PER_PULL = 4096
HEAD = "node0"


def check_supported(spec: ClusterSpec) -> None:
    """Refuse layouts the agents cannot run, naming what is wrong (nodes.py checked the rest)."""
    if not spec.node(0).hosts_trainers:
        raise ClusterError(f"node 0 is a {spec.node(0).kind!r} node: the trainer (or combined) node must be rank 0, "
                           f"it runs the run's agent loop (give its [[cluster.nodes]] table rank = 0)")


def cluster_config(config: Config, spec: ClusterSpec) -> Config:
    """The role counts every node agrees on, whatever its own core count: trainers of the trainer node; actors and
    refreshers of the data node (unset: [roles]'s, else 1 actor and no refresher)."""
    data = spec.replay_node
    actors = data.actors or config.roles.actors or 1
    refreshers = data.refreshers or (config.roles.refreshers if config.roles.refreshers > 0 else -1)
    return replace(config, roles=replace(config.roles, trainers=spec.trainer_node.trainers, actors=actors,
                                         refreshers=refreshers))


@dataclass(frozen=True)
class Placement:
    """Which node runs which role process and which node is home to which channel and replica (pure: no I/O)."""

    spec: ClusterSpec
    homes: dict[int, int]  # global reanalyzer index → rank of its node
    trainers: int

    @classmethod
    def of(cls, spec: ClusterSpec, config: Config) -> Placement:
        """Combined node: its own reanalyzers (`reanalyzers`, unset: [roles]'s, else 1; −1 none) first; then each
        reanalysis node's (unset: 1)."""
        homes: dict[int, int] = {}
        for node in spec.nodes:
            if node.kind == "combined" and node.reanalyzers >= 0:
                count = node.reanalyzers or config.roles.reanalyzers or 1
            elif node.kind == "reanalysis":
                count = node.reanalyzers or 1
            else:
                continue
            for _ in range(count):
                homes[len(homes)] = node.rank
        return cls(spec, homes, spec.trainer_node.trainers)

    @property
    def data(self) -> int:
        """Rank of the node that hosts replay, actors, refreshers and the frame stores."""
        return self.spec.replay_node.rank

    @property
    def ranks(self) -> list[int]:
        return [n.rank for n in self.spec.nodes]

    def roles_on(self, rank: int, plan: RolePlan) -> list[tuple[str, int]]:
        """(role, index) of every process node `rank` runs (replay first, actors last, as on one box)."""
        roles = [("replay", 0)] if rank == self.data else []
        if rank == 0:
            roles += [("evaluator", 0)] + [("trainer", t) for t in range(plan.trainers)]
        roles += [("reanalyzer", j) for j, home in self.homes.items() if home == rank]
        if rank == self.data:
            roles += [("refresher", j) for j in range(plan.refreshers)] + [("actor", i) for i in range(plan.actors)]
        return roles

    def rows_on(self, rank: int, plan: RolePlan) -> list[str]:
        """Board rows written on node `rank` (its processes')."""
        return [role_name(role, index) for role, index in self.roles_on(rank, plan)]

    def outbound(self, rank: int) -> list[tuple[str, int]]:
        """(channel, destination rank) of every ring node `rank` forwards to another node."""
        out = []
        if rank == self.data:
            out += [(f"samples{j}", home) for j, home in self.homes.items() if home != rank]
        if rank != 0:
            out += [(f"{batch_mux(t)}.{j}", 0) for j, home in self.homes.items() if home == rank
                    for t in range(self.trainers)]
        elif self.data != 0:
            out += [(f"priorities.{t}", self.data) for t in range(self.trainers)]
        return out

    def inbound(self, rank: int) -> list[str]:
        """Channels other nodes deliver into node `rank`'s rings."""
        return [channel for r in self.ranks if r != rank for channel, dest in self.outbound(r) if dest == rank]

    def kind(self, rank: int) -> str:
        return self.spec.node(rank).kind


def channel_kind(channel: str) -> str:
    """'samples3' → 'samples', 'batches1.2' → 'batches', 'priorities.0' → 'priorities'."""
    return re.match(r"[a-z]+", channel).group(0)


class NodeLink:
    """One node's bridge to the others: forwards its outbound channels, takes its inbound ones, serves what it is
    home to (frames on the data node; weights and the board on node 0; its own board rows everywhere) and pulls
    replicas of the rest. Node 0 passes it to `run_single_box`; the other nodes run `run_remote_node`."""

    def __init__(self, placement: Placement, rank: int, say: Any = print) -> None:
        self.placement, self.rank, self.say = placement, rank, say
        self.spec = placement.spec
        self.forwarders: list[bridge.Forwarder] = []
        self.lost: set[str] = set()  # reanalysis nodes given up on (node 0 trains on without them)
        self.fatal: Exception | None = None  # node 0 or the data node gone: this node (or the run) stops
        self.fatal_peer = ""
        self.pulled = {"frames": 0, "weights": 0, "board": 0}  # payload bytes pulled from other nodes
        self.versions: dict[str, int] = {}
        self.train_steps = 0  # node 0's, as last seen
        self.stopped = False
        self.resumed_at: tuple[int, int] | None = None  # node 0 under --resume: the checkpoint's (train, env) steps
        self._plan: RolePlan | None = None
        self._told = threading.Event()  # node 0's board carried the stop control
        self._stop = threading.Event()
        self._pullers: list[threading.Thread] = []

    # ---- what this node runs
    def plan(self, plan: RolePlan) -> RolePlan:
        """The cluster's plan (reanalyzers: every node's) from this node's."""
        self._plan = replace(plan, reanalyzers=len(self.placement.homes))
        return self._plan

    def local_roles(self, plan: RolePlan) -> list[tuple[str, int]]:
        return self.placement.roles_on(self.rank, plan)

    @property
    def hosts_replay(self) -> bool:
        """Replay and the frame stores are on this node (its agent writes the replay snapshot's frames)."""
        return self.placement.data == self.rank

    def local_rows(self, snapshot: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """The rows of `snapshot` that this node's processes write (the others are replicas)."""
        mine = set(self.placement.rows_on(self.rank, self._plan))
        return {name: row for name, row in snapshot.items() if name in mine}

    # ---- start / stop
    def start(self, run_id: str, owned: list, board: Board) -> None:
        assert self._plan is not None, "NodeLink.plan() first"
        slots, stores = _slots_and_stores(owned)
        own = _row_indices(board, self.placement.rows_on(self.rank, self._plan))
        bridge.register_service("rows", lambda: torch.from_numpy(board.rows[own].copy()))
        if self.hosts_replay:
            bridge.register_service("frames", lambda i, first, most: _frames_reply(stores[i], first, most))
        if self.rank == 0:
            bridge.register_service("resumed", lambda: torch.tensor(self.resumed_at or (-1, -1), dtype=torch.int64))
            bridge.register_service("weights", lambda name, have: _weights_reply(slots[name], have))
            bridge.register_service("board", lambda: torch.from_numpy(
                np.concatenate([board.controls, board.rows.reshape(-1)])))
        for channel in self.placement.inbound(self.rank):
            bridge.register_inbound(channel, Ring.attach(run_id, channel).writer())
        for channel, dest in self.placement.outbound(self.rank):
            reader = Ring.attach(run_id, channel).reader()
            self.forwarders.append(bridge.Forwarder(reader, f"node{dest}", channel, self.spec.rpc_timeout_s,
                                                    batch=4, on_lost=self._lost, follow_restarts=True).start())
        self.versions = {name: -1 for name in slots}
        self._pullers = [threading.Thread(target=self._pull_loop, args=(peer, pulls), daemon=True,
                                          name=f"pull-from-{peer}")
                         for peer, pulls in self._pulls(slots, stores, board).items()]
        for puller in self._pullers:
            puller.start()

    def stop(self) -> None:
        """Stop forwarding and pulling; node 0 then tells every node still there to stop (in that order: a stopped
        node no longer answers, which a forwarder would report as a loss). Once: later calls do nothing."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        for forwarder in self.forwarders:
            forwarder.stop(2.0)
        for puller in self._pullers:
            puller.join(5.0)
        if self.rank == 0:  # the data node first: it feeds the others, which it would see go as losses
            data = self.placement.data
            for rank in sorted(self.placement.ranks[1:], key=lambda r: r != data):
                if f"node{rank}" not in self.lost and f"node{rank}" != self.fatal_peer:
                    bridge.notify_peer(f"node{rank}", "stop", 5.0)

    def told_to_stop(self) -> bool:
        """Node 0 ended the run: it said so (the 'stop' event) or its board carried the stop control."""
        return self._told.is_set() or bridge.wait_event("stop", 0)

    def should_stop(self) -> bool:
        return self.told_to_stop() or self.fatal is not None

    # ---- losses
    def _lost(self, peer: str, err: Exception) -> None:
        """A peer failed a call: a reanalysis node is left out; node 0 or the data node ends the run."""
        if peer in (HEAD, f"node{self.placement.data}"):
            if self.fatal is None:
                self.fatal, self.fatal_peer = err, peer
            return
        if peer not in self.lost:
            self.lost.add(peer)
            if self.rank != 0 and (self._stop.is_set() or self.told_to_stop()):
                return  # the run is ending: nodes stop in turn, which is no loss
            self.say(f"[agent] lost {peer}: {str(err).splitlines()[0][:200]}; training goes on without it",
                     flush=True)

    # ---- replicas
    def _pull_loop(self, peer: str, pulls: list[Any]) -> None:
        """Run `pulls` (calls to `peer`) every PULL_S until the link stops or the peer is lost. One thread per peer:
        a hung peer holds up only its own replicas (until the deadline), not the others'."""
        started = time.monotonic()
        while not self._stop.is_set() and self.fatal is None and peer not in self.lost:
            for pull in pulls:
                try:
                    pull()
                except bridge.ServiceNotReadyError as err:  # the peer is still starting: wait, within the deadline
                    if time.monotonic() - started > self.spec.rpc_timeout_s:
                        self._lost(peer, err)
                        return
                except Exception as err:  # noqa: BLE001 - the peer is gone or hung past the deadline
                    self._lost(peer, err)
                    return
            self._stop.wait(PULL_S)

    def _pulls(self, slots: dict[str, WeightSlot], stores: list[FrameStore], board: Board) -> dict[str, list[Any]]:
        """Peer → the pulls of the replicas this node keeps from it: frames from the data node, weights and the
        board from node 0; on node 0, each other node's own rows."""
        data = f"node{self.placement.data}"
        pulls: dict[str, list[Any]] = {}
        if not self.hosts_replay:
            pulls.setdefault(data, []).append(lambda: self._pull_frames(data, stores))
        if self.rank != 0:
            own = set(_row_indices(board, self.placement.rows_on(self.rank, self._plan)))
            rows = [i for i, name in enumerate(board.row_names) if i not in own and name != "agent"]
            # all of node 0's controls but, on a separate data node, the replay snapshot serial: its own agent
            # asks its replay for snapshots
            controls = [i for i, name in enumerate(CONTROLS) if not (name == "snapshot" and self.hosts_replay)]
            pulls.setdefault(HEAD, []).extend([lambda: self._pull_weights(slots),
                                               lambda: self._pull_board(board, rows, controls)])
        else:
            for rank in self.placement.ranks[1:]:
                rows = _row_indices(board, self.placement.rows_on(rank, self._plan))
                pulls.setdefault(f"node{rank}", []).append(lambda r=rank, rows=rows: self._pull_rows(r, rows, board))
        return pulls

    def _pull_frames(self, peer: str, stores: list[FrameStore]) -> None:
        for i, store in enumerate(stores):
            first, frames = bridge.call(peer, "frames", i, store.next_id, FRAMES_PER_PULL,
                                        timeout_s=self.spec.rpc_timeout_s)
            if first > store.next_id:
                store.skip_to(first)
            if frames.numel():
                store.append(frames.numpy())
                self.pulled["frames"] += frames.numel() * frames.element_size()

    def _pull_weights(self, slots: dict[str, WeightSlot]) -> None:
        for name, slot in slots.items():
            version, flat = bridge.call(HEAD, "weights", name, self.versions[name], timeout_s=self.spec.rpc_timeout_s)
            if flat.numel():
                slot.publish(flat.numpy(), version)
                self.versions[name] = version
                self.pulled["weights"] += flat.numel()

    def _pull_board(self, board: Board, rows: list[int], controls: list[int]) -> None:
        """Node 0's board into this node's: the `rows` (every row but this node's own and its agent's) and the
        `controls` it mirrors (see `_pulls`)."""
        flat = bridge.call(HEAD, "board", timeout_s=self.spec.rpc_timeout_s).numpy()
        self.pulled["board"] += flat.nbytes
        theirs = flat[len(CONTROLS):].reshape(board.rows.shape)
        board.rows[rows] = theirs[rows]
        board.controls[controls] = flat[:len(CONTROLS)][controls]
        self.train_steps = int(board.get("trainer", "train_steps"))
        if board.stopping:
            self._told.set()

    def resume_counters(self) -> tuple[int, int]:
        """(train steps, env steps) of the checkpoint node 0 resumed from, once it has loaded it ((-1, -1): node 0
        is not resuming). Raises what `bridge.call` raises if node 0 does not answer within the deadline."""
        deadline = time.monotonic() + self.spec.rpc_timeout_s
        while True:
            try:
                train, env = bridge.call(HEAD, "resumed", timeout_s=self.spec.rpc_timeout_s).tolist()
                return int(train), int(env)
            except bridge.ServiceNotReadyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _pull_rows(self, rank: int, rows: list[int], board: Board) -> None:
        values = bridge.call(f"node{rank}", "rows", timeout_s=self.spec.rpc_timeout_s).numpy()
        self.pulled["board"] += values.nbytes
        board.rows[rows] = values.reshape(len(rows), -1)

    # ---- traffic
    def link_bytes(self) -> dict[str, int]:
        """Payload bytes this node moved so far, by what they carry (RPC framing not counted): replicas pulled
        (frames_in, weights_in, counters_in: board rows), and ring records delivered here (<kind>_in) and sent
        from here (<kind>_out) by channel kind (samples, batches, priorities)."""
        out = {"frames_in": self.pulled["frames"], "weights_in": self.pulled["weights"],
               "counters_in": self.pulled["board"]}
        delivered = bridge.inbound_bytes()
        for channel in self.placement.inbound(self.rank):
            key = f"{channel_kind(channel)}_in"
            out[key] = out.get(key, 0) + delivered.get(channel, 0)
        for forwarder in self.forwarders:
            key = f"{channel_kind(forwarder.channel)}_out"
            out[key] = out.get(key, 0) + forwarder.stats.bytes
        return out


def _row_indices(board: Board, names: list[str]) -> list[int]:
    return [board.row_names.index(name) for name in names]


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


def resume_data_node(config: Config, run_dir: Path, link: NodeLink, plan: RolePlan, say: Any) -> ResumeState | None:
    """--resume on a separate data node: node 0's checkpoint counters and this node's replay snapshot and frames
    (None: node 0 is not resuming). ClusterError if the snapshot's actors differ from the cluster file's."""
    from speedy.components import block_layout, frame_store_capacity, task_spec
    from speedy.roles.resume import load_replay_frames

    train_steps, env_steps = link.resume_counters()
    if train_steps < 0:
        return None
    layout = block_layout(config, task_spec(config))
    frames = load_replay_frames(run_dir, say, lambda n: frame_store_capacity(config, layout, config.actor.num_envs, n))
    if frames is not None and len(frames) != plan.actors:
        raise ClusterError(f"the replay snapshot in {run_dir} holds the frames of {len(frames)} actors, the cluster "
                           f"file's data node runs {plan.actors}: resume with the actors it had")
    say(f"[node{link.rank}] resuming replay at env step {env_steps} "
        f"({'with' if frames is not None else 'without'} the replay buffer)", flush=True)
    return ResumeState({}, {}, {}, {}, train_steps, env_steps, frames, frames is not None)


def run_remote_node(config: Config, run_dir: Path, placement: Placement, world: TorchrunWorld,
                    say: Any = print, resume: bool = False) -> int:
    """Run this node's roles (a data or reanalysis node) for node 0 until it says stop (0), or until node 0 or the
    data node is lost (1). A data node also keeps the replay snapshots and frames (as a single box does), and with
    `resume` restores them."""
    import os
    import uuid

    from speedy.roles.launch import SnapshotSchedule, Supervisor, create_shared_memory, plan_roles
    from speedy.roles.resume import restore_shared_state, save_frames
    from speedy.shm.segment import cleanup_stale

    rank = world.rank
    link = NodeLink(placement, rank, say)
    plan = link.plan(plan_roles(config))
    restored = resume_data_node(config, run_dir, link, plan, say) if resume and link.hosts_replay else None
    run_id = f"r{os.getpid()}{uuid.uuid4().hex[:6]}"
    cleanup_stale()
    owned = create_shared_memory(config, plan, run_id)
    board: Board = owned[0]
    stores = [h for h in owned if isinstance(h, FrameStore)]
    if restored is not None:
        restore_shared_state(restored, run_dir, stores, board, config.replay.start_env_steps)
    snapshots = SnapshotSchedule(run_dir, stores, board,
                                 config.run.replay_snapshot_interval_min if link.hosts_replay else 0.0)
    roles = link.local_roles(plan)
    supervisor = Supervisor(config, plan, run_id, run_dir, roles=roles)
    say(f"[node{rank}] {placement.kind(rank)} node: {', '.join(role_name(r, i) for r, i in roles)} for {HEAD}",
        flush=True)
    traffic = MetricsWriter(run_dir, "link", tensorboard=False)
    devices = DeviceMonitor.start(say=say)  # this node's GPUs (None without one), in its link records
    next_write = time.monotonic()
    ended = False
    try:
        link.start(run_id, owned, board)
        supervisor.start_all()
        while not link.should_stop():
            supervisor.check(board, say)
            snapshots.poll()
            if time.monotonic() >= next_write:
                traffic.write(link.train_steps, {"peer": HEAD, **link.link_bytes(), **device_report(devices)})
                next_write = time.monotonic() + config.run.log_interval_s
            time.sleep(0.2)
    finally:
        ended = link.told_to_stop()  # before the stop below, which the pull loop's end could look like a loss
        if devices is not None:
            devices.close()
        final_serial = snapshots.finish()  # replay's last snapshot carries it, and so do the frames below
        board.set_control("stop", 1)
        supervisor.stop()
        link.stop()
        if link.hosts_replay:
            save_frames(run_dir, stores, final_serial)
        traffic.write(link.train_steps, {"peer": HEAD, **link.link_bytes()})
        traffic.close()
        for handle in reversed(owned):
            handle.close()
    if link.train_steps:
        moved = link.link_bytes()
        say(f"[node{rank}] link to {HEAD}: {sum(moved.values()) / link.train_steps / 1024:.1f} KiB per training step "
            f"({', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in moved.items())})", flush=True)
    if link.fatal is not None and not ended:  # node 0 closing its end after saying stop is no loss
        say(f"[node{rank}] {link.fatal_peer} is gone ({str(link.fatal).splitlines()[0][:200]}); stopped", flush=True)
        return 1
    say(f"[node{rank}] stopped: {HEAD} ended the run", flush=True)
    return 0


def run_cluster_node(config: Config, run_dir: Path, spec: ClusterSpec, world: TorchrunWorld, say: Any = print,
                     resume: bool = False) -> NoReturn:
    """Entry of `run.py` under torchrun: join RPC, then run node 0 (the run's agent loop) or another node. With
    `resume`, node 0 continues the stopped run in `run_dir` (checkpoint; replay and frames where it hosts them:
    speedy/roles/resume.py), a separate data node restores its replay and frames from its own directory, and
    reanalysis nodes hold nothing to restore (they replicate what they need again).
    Exit codes: 0 done, 1 lost node 0 or the data node / a run failure, 2 a checkpoint that cannot be resumed."""
    from speedy.checkpoint import CheckpointError
    from speedy.roles.launch import RunFailedError, run_single_box

    check_supported(spec)
    config = cluster_config(config, spec)  # every node sizes its shared memory alike
    placement = Placement.of(spec, config)
    set_interface(spec.interface)
    init_rpc(world, spec.rpc_timeout_s)
    code = 0
    try:
        if world.rank == 0:
            link = NodeLink(placement, 0, say)
            try:
                summary = run_single_box(config, run_dir, link=link, resume=resume)
            except (CheckpointError, MemoryError, RunFailedError) as err:
                code = 2 if isinstance(err, CheckpointError) else 1
                say(f"error: {'cannot resume: ' if code == 2 else ''}{err}", flush=True)
                link.stop()  # the other nodes stop now rather than at their deadline
            else:
                lost = sorted(link.lost | ({link.fatal_peer} if link.fatal is not None else set()))
                code = 1 if link.fatal is not None else 0
                say(f"[node0] {summary.train_steps} training steps; lost nodes: {lost or 'none'}", flush=True)
        else:
            try:
                code = run_remote_node(config, run_dir, placement, world, say, resume)
            except ClusterError as err:
                say(f"error: cannot resume: {err}", flush=True)
                code = 2
    except BaseException:  # noqa: BLE001 - reported here: the exit below skips Python's own report
        traceback.print_exc()
        code = 1
    finally:
        leave_rpc_and_exit(code, say=say)  # everything is written: a stuck RPC shutdown cannot hold the node
