"""The node agent of a single-box run: sizes the roles to the machine, creates the node's shared memory, starts
one process per role, supervises them (restart on failure, stop on repeated failure), shows progress, and on the
end of training, a reached target or Ctrl-C/SIGTERM stops everything, keeps the final checkpoint, and removes the
shared memory.

Shared memory of a run `<id>` (all under /dev/shm/speedy_<id>_*):
    board                   per-process counters and stage timers (speedy/roles/board.py)
    frames<i>               actor i's frame store (single writer)
    blocks (mux)            actors → replay: trajectory blocks
    samples<j>              replay → reanalyzer j: sample windows
    batches (mux)           reanalyzers → trainer: batch targets (frames travel as refs); with DDP trainers one
                            mux per trainer t (`batch_mux(t)`: batches, batches1, …), each reanalyzer a ring in each
    priorities (mux)        trainers (0…T−1) and refreshers (T…) → replay: priority updates
    refresh<j>              replay → refresher j: sweep chunks
    weights, target         weight slots: latest weights and the target model
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import psutil
import torch

from speedy.cluster.ddp import free_port
from speedy.components import block_layout, build_model, frame_store_capacity, task_spec
from speedy.config import Config
from speedy.device_monitor import DeviceMonitor, device_report
from speedy.inline import RunSummary
from speedy.metrics import MetricsWriter
from speedy.profile import RingMonitor, analyze, format_report, ring_depth
from speedy.replay.buffer import replay_memory_bytes
from speedy.roles.board import Board
from speedy.roles.cluster_agent import NodeLink
from speedy.roles.context import (
    ACTING_WEIGHTS,
    EVAL_WEIGHTS,
    LATEST_WEIGHTS,
    TARGET_WEIGHTS,
    RolePlan,
    RoleSpec,
    acting_slot,
    batch_mux,
    eval_slot,
)
from speedy.roles.process import group_signals_held, role_context, role_main
from speedy.roles.resume import (
    FrameJournal,
    ResumeState,
    load_resume,
    restore_shared_state,
    resume_plan,
    save_frames,
)
from speedy.runinfo import Milestones, host_summary, milestone_interval
from speedy.shm.frames import FrameStore
from speedy.shm.mux import create_mux
from speedy.shm.ring import Ring
from speedy.shm.segment import cleanup_stale
from speedy.shm.weights import WeightLayout, WeightSlot


class RunFailedError(RuntimeError):
    """A role kept failing; the message names it and its log file."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return psutil.cpu_count() or 1


def plan_roles(config: Config, cores: int | None = None) -> RolePlan:
    """Processes for this machine: on C cores about C/4 actors and C/4 reanalyzers (at least one each), one
    refresher from 4 cores up; replay and evaluator are light. Settings in [roles] override."""
    cores = cores or usable_cores()
    roles = config.roles
    actors = roles.actors or max(1, cores // 4)
    reanalyzers = roles.reanalyzers or max(1, cores // 4)
    refreshers = 0 if roles.refreshers < 0 else (roles.refreshers or (1 if cores >= 4 else 0))
    trainers = roles.trainers
    left = max(1, cores - actors - reanalyzers)  # the cores the other busy roles leave, split over the trainers
    trainer_threads = roles.trainer_threads or (max(1, left // trainers) if not torch.cuda.is_available() else 2)
    threads = {"actor": 1, "reanalyzer": 1, "refresher": 1, "replay": 1, "evaluator": 1, "trainer": trainer_threads}
    return RolePlan(actors=actors, reanalyzers=reanalyzers, refreshers=refreshers, threads=threads,
                    trainers=trainers)


def _ring_bytes(message_bytes: int, messages: int) -> int:
    return max(4096, (messages * (message_bytes + 512) + 63) // 64 * 64)


def _mux(run_id: str, name: str, producers: int, capacity: int) -> list:
    """A many-to-one channel's rings plus its header segment (closing all of them removes the mux)."""
    rings = create_mux(run_id, name, producers, capacity)
    return [*rings, rings[0].mux_segment]


def check_memory(frame_bytes: int, replay_bytes: int, config: Config) -> None:
    """Refuse a run whose frame stores cannot fit in /dev/shm, or whose frame stores and replay buffer (bytes)
    cannot fit in available memory, before creating anything."""
    shm_free = shutil.disk_usage("/dev/shm").free
    available = psutil.virtual_memory().available
    if frame_bytes > shm_free or frame_bytes + replay_bytes > 0.8 * available:
        raise MemoryError(
            f"frame stores need {frame_bytes / 2**30:.1f} GiB of shared memory and replay "
            f"{replay_bytes / 2**30:.2f} GiB more of RAM, but /dev/shm has {shm_free / 2**30:.1f} GiB free and "
            f"{available / 2**30:.1f} GiB of RAM is available: lower replay.capacity (now {config.replay.capacity}) "
            f"or enlarge /dev/shm")


def create_shared_memory(config: Config, plan: RolePlan, run_id: str,
                         initial: ResumeState | None = None) -> list:
    """Create every segment of the run (see module docstring); returns the owning handles (close = unlink)."""
    spec = task_spec(config)
    layout = block_layout(config, spec)
    B, K, n, s, A = (config.train.batch_size, layout.unroll_steps, layout.td_steps, layout.frame_stack,
                     spec.num_actions)
    window_bytes = B * ((s + K + n) * 8 + K * 8 + (K + n) * 4 + (K + 1) * A * 4 + 40)
    target_bytes = B * ((s + K) * 8 + K * 12 + (K + 1) * (8 + A * 4) + 24)
    block_bytes = (s - 1 + layout.block_length + K + n) * 8 + (layout.block_length + K) * (8 + A * 4) + \
        (layout.block_length + K + n) * 4
    chunk_bytes = config.roles.refresh_chunk * ((s + K + n) * 8 + K * 8 + (K + n) * 4 + (K + 1) * A * 4 + 40)
    in_flight = config.roles.batches_in_flight
    capacity = frame_store_capacity(config, layout, config.actor.num_envs, plan.actors)
    check_memory(plan.actors * capacity * int(np.prod(spec.frame_shape)) * np.dtype(spec.frame_dtype).itemsize,
                 replay_memory_bytes(layout, config.replay.capacity), config)
    owned: list = [Board.create(run_id, plan.row_names())]
    owned += [FrameStore.create(run_id, f"frames{i}", spec.frame_shape, spec.frame_dtype, capacity)
              for i in range(plan.actors)]
    owned += _mux(run_id, "blocks", plan.actors, _ring_bytes(block_bytes, 64))
    sample_ring = ring_depth(config.roles.sample_ring_messages, in_flight)
    owned += [Ring.create(run_id, f"samples{j}", _ring_bytes(window_bytes, sample_ring))
              for j in range(plan.reanalyzers)]
    batch_ring = ring_depth(config.roles.batch_ring_messages, in_flight)
    for t in range(plan.trainers):
        owned += _mux(run_id, batch_mux(t), plan.reanalyzers, _ring_bytes(target_bytes, batch_ring))
    owned += _mux(run_id, "priorities", plan.trainers + plan.refreshers, _ring_bytes(B * 24 + chunk_bytes // 4, 16))
    owned += [Ring.create(run_id, f"refresh{j}", _ring_bytes(chunk_bytes, 2)) for j in range(plan.refreshers)]
    model = build_model(config, spec, torch.device("cpu"))
    state = model.state_dict()
    weights = {LATEST_WEIGHTS: state, TARGET_WEIGHTS: state}
    if initial is not None:  # --resume: the checkpoint's weights, as the version of its training step
        weights = {LATEST_WEIGHTS: initial.model, TARGET_WEIGHTS: initial.target_model}
    if acting_slot(config) == ACTING_WEIGHTS:
        weights[ACTING_WEIGHTS] = initial.acting_model if initial is not None else state
    if eval_slot(config) == EVAL_WEIGHTS:
        weights[EVAL_WEIGHTS] = initial.eval_model if initial is not None else state
    for name, values in weights.items():
        slot = WeightSlot.create(run_id, name, WeightLayout.from_state_dict(state))
        slot.publish_state_dict(values, initial.train_steps if initial is not None else 0)
        owned.append(slot)
    return owned


class Supervisor:
    """Starts, watches and restarts the role processes of one node."""

    def __init__(self, config: Config, plan: RolePlan, run_id: str, run_dir: Path,
                 roles: list[tuple[str, int]] | None = None) -> None:
        """`roles`: the (role, index) processes of this node; default every role of `plan` (a single box)."""
        self.config, self.plan, self.run_id, self.run_dir = config, plan, run_id, run_dir
        self.context = role_context()
        self.processes: dict[str, mp.process.BaseProcess] = {}
        self.specs: dict[str, RoleSpec] = {}
        self.restarts: dict[str, int] = {}
        config_dict = asdict(config)
        if roles is None:
            roles = [("replay", 0), ("evaluator", 0)] + [("trainer", t) for t in range(plan.trainers)]
            roles += [("reanalyzer", j) for j in range(plan.reanalyzers)]
            roles += [("refresher", j) for j in range(plan.refreshers)]
            roles += [("actor", i) for i in range(plan.actors)]
        for role, index in roles:
            spec = RoleSpec(role, index, run_id, str(run_dir), config_dict, plan, plan.threads[role])
            self.specs[spec.name] = spec
            self.restarts[spec.name] = 0

    def start(self, name: str) -> None:
        process = self.context.Process(target=role_main, args=(self.specs[name],), name=f"speedy-{name}", daemon=True)
        with group_signals_held():  # the fork server, when this starts it, never acts on them
            process.start()
        self.processes[name] = process

    def start_all(self) -> None:
        for name in self.specs:
            self.start(name)

    def check(self, board: Board, log) -> str | None:  # noqa: ANN001
        """Restart failed roles. Returns 'trained' when the trainer finished its steps, else None."""
        for name, process in list(self.processes.items()):
            if process.is_alive() or process.exitcode is None:
                continue
            code = process.exitcode
            del self.processes[name]
            board.row(name).set("exit_code", code)
            if code == 0:
                if name == "trainer":
                    return "trained"
                continue  # an actor that used up its env budget
            self.restarts[name] += 1
            log_file = self.run_dir / "logs" / f"{name}.log"
            if name.startswith("trainer") and self.plan.trainers > 1:
                raise RunFailedError(f"DDP trainer {name} failed (exit code {code}; traceback in {log_file}); a "
                                     f"process group cannot re-admit a member, so the run stops: --resume it")
            if self.restarts[name] > self.config.roles.max_restarts:
                raise RunFailedError(f"role {name} failed {self.restarts[name]} times (exit code {code}); "
                                f"its tracebacks are in {log_file}")
            log(f"[agent] {name} exited with code {code}; restart {self.restarts[name]}/"
                f"{self.config.roles.max_restarts} (traceback in {log_file})")
            board.row(name).add("restarts", 1)
            self.start(name)
        return None

    def stop(self, timeout_s: float = 15.0, writers_s: float = 90.0) -> None:
        """Wait for every role to see the stop flag and exit (`timeout_s` in all; the trainer and replay, which
        write the final checkpoint and the replay snapshot, up to `writers_s`), then kill what is left."""
        deadline = time.monotonic() + timeout_s
        for name in ("trainer", "replay"):
            if name in self.processes:
                self.processes[name].join(writers_s)
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():  # a role ignores SIGTERM while its agent lives (die_with_agent)
            if process.is_alive():
                process.kill()
                process.join(1.0)


class Progress:
    """The live progress line and per-interval rates from board snapshots."""

    def __init__(self, board: Board, start: float) -> None:
        self.board, self.start = board, start
        self.last = (start, board.snapshot())

    def line(self) -> str:
        now, snap = time.time(), self.board.snapshot()
        then, prev = self.last
        self.last = (now, snap)
        dt = max(now - then, 1e-6)

        def rate(prefix: str, field: str) -> float:
            return sum(v[field] - prev[k][field] for k, v in snap.items() if k.startswith(prefix)) / dt

        env = sum(v["env_steps"] for k, v in snap.items() if k.startswith("actor"))
        trainer = snap["trainer"]
        wait = (trainer["wait_input"] - prev["trainer"]["wait_input"]) / dt
        evaluator = snap["evaluator"]
        eval_text = f"{evaluator['eval_return']:.1f}" if evaluator["evals"] else "-"
        returns = [v["episode_return"] for k, v in snap.items() if k.startswith("actor") and v["episodes"]]
        play = f"{np.mean(returns):.1f}" if returns else "-"
        return (f"[{now - self.start:6.0f}s] env {int(env)} ({rate('actor', 'env_steps'):.0f}/s) "
                f"train {int(trainer['train_steps'])} ({rate('trainer', 'train_steps'):.1f}/s) "
                f"selfplay {play} eval {eval_text} | reanalyzers {rate('reanalyzer', 'items'):.1f} batch/s "
                f"| trainer starved {100 * min(1.0, wait):.0f}% | replay {int(snap['replay']['items'])}"
                + restarts_text(snap))


def restarts_text(snap: dict[str, dict[str, float]]) -> str:
    """' | restarts actor0 1, trainer 2' for the processes restarted after a failure ('' if none)."""
    counts = {name: int(v.get("restarts", 0)) for name, v in snap.items() if v.get("restarts", 0)}
    return (" | restarts " + ", ".join(f"{k} {v}" for k, v in counts.items())) if counts else ""


def final_evaluation(board: Board, supervisor: Supervisor, say, timeout_s: float = 600.0) -> None:  # noqa: ANN001
    """After the last training step: one evaluation of the final weights (unless one just ran)."""
    final_step = board.get("trainer", "train_steps")
    if board.get("evaluator", "eval_train_steps") >= final_step:
        return
    say("[agent] training finished; evaluating the final weights", flush=True)
    board.set_control("final_eval", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and board.get("evaluator", "eval_train_steps") < final_step:
        if supervisor.check(board, say) is not None or "evaluator" not in supervisor.processes:
            return
        time.sleep(0.2)


class SnapshotSchedule:
    """The agent's side of crash-safe replay snapshots (speedy/roles/resume.py): every `every_min` minutes ask the
    replay role for one (board control 'snapshot' = a new serial); once its row acks the serial, journal the frames
    in a worker thread. `finish` waits for a journal write in flight and returns the serial of the final snapshot."""

    def __init__(self, run_dir: Path, stores: list[FrameStore], board: Board, every_min: float) -> None:
        self.board, self.every_s = board, 60.0 * every_min
        self.journal = FrameJournal(run_dir, stores) if every_min > 0 else None
        self.next_due = time.monotonic() + self.every_s
        self.pending: int | None = None
        self.writer: threading.Thread | None = None

    @staticmethod
    def new_serial() -> int:
        return time.time_ns() // 1_000_000  # unique per run directory; exact in the board's float64

    def poll(self) -> None:
        if self.journal is None or (self.writer is not None and self.writer.is_alive()):
            return
        if self.pending is None and time.monotonic() >= self.next_due:
            self.pending = self.new_serial()
            self.board.set_control("snapshot", self.pending)
        elif self.pending is not None and self.board.get("replay", "snapshot_serial") == self.pending:
            self.writer = threading.Thread(target=self.journal.append, args=(self.pending,), daemon=True,
                                           name="frame-journal")
            self.writer.start()
            self.pending, self.next_due = None, time.monotonic() + self.every_s

    def finish(self) -> int:
        if self.writer is not None:
            self.writer.join()
        serial = self.new_serial()
        self.board.set_control("snapshot", serial)
        return serial


def run_single_box(config: Config, run_dir: Path, log: bool = True, resume: bool = False,
                   link: NodeLink | None = None) -> RunSummary:
    """Train with every role in its own process on this machine; returns the run summary. With `resume`, continue
    the stopped run in `run_dir` (speedy/roles/resume.py; CheckpointError if it has no usable checkpoint). With
    `link`, this is node 0 of a cluster: the other nodes run reanalyzers, and the data node replay and actors
    (speedy/roles/cluster_agent.py); this agent loop then sees their board rows as replicas."""
    say = print if log else (lambda *a, **k: None)
    plan = plan_roles(config)
    if link is not None:
        plan = link.plan(plan)
    if plan.trainers > 1:
        plan = replace(plan, ddp_port=free_port())
    layout = block_layout(config, task_spec(config))
    capacity = lambda actors: frame_store_capacity(config, layout, config.actor.num_envs, actors)  # noqa: E731
    keeps_replay = link is None or link.hosts_replay  # else replay and the frames live on the data node
    restored = load_resume(run_dir, asdict(config), say, capacity, keeps_replay) if resume else None
    if restored is not None:
        plan = resume_plan(plan, restored)
        where = ("with" if restored.has_replay else "without") + " the replay buffer" if keeps_replay else \
            "the replay buffer is the data node's"
        say(f"[agent] resuming at train step {restored.train_steps}, env step {restored.env_steps} ({where})",
            flush=True)
        if link is not None:
            link.resumed_at = (restored.train_steps, restored.env_steps)
    run_id = f"r{os.getpid()}{uuid.uuid4().hex[:6]}"
    stale = cleanup_stale()
    if stale:
        say(f"[agent] removed {len(stale)} shared-memory segment(s) left by killed runs")
    say(f"[agent] pid {os.getpid()}: Ctrl-C stops (final checkpoint kept), SIGUSR1 pauses/resumes", flush=True)
    trainers = f"{plan.trainers} DDP trainers" if plan.trainers > 1 else "trainer"
    say(f"[agent] {plan.actors} actor(s), {plan.reanalyzers} reanalyzer(s), {plan.refreshers} refresher(s), "
        f"{trainers} with {plan.threads['trainer']} thread(s); shared memory speedy_{run_id}_*", flush=True)
    owned = create_shared_memory(config, plan, run_id, restored)
    board: Board = owned[0]
    stores = [h for h in owned if isinstance(h, FrameStore)]
    if restored is not None and keeps_replay:
        restore_shared_state(restored, run_dir, stores, board, config.replay.start_env_steps)
    metrics = MetricsWriter(run_dir, "agent", tensorboard=False)
    metrics.write(0, {"event": "start", "cores": usable_cores(), "plan": asdict(plan), "config": asdict(config),
                      "host": host_summary()})
    start = time.time()
    milestones = Milestones(metrics, start, milestone_interval(config.run.max_env_steps),
                            int(board.column("env_steps", "actor").sum()))
    board.set_control("start_time", start)
    supervisor = Supervisor(config, plan, run_id, run_dir, link.local_roles(plan) if link is not None else None)
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # noqa: ANN001, ARG001
        raise KeyboardInterrupt

    def on_usr1(signum, frame):  # noqa: ANN001, ARG001
        paused = not board.paused
        board.set_control("pause", 1.0 if paused else 0.0)
        say(f"[agent] {'paused' if paused else 'resumed'} (SIGUSR1 toggles)", flush=True)

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the run even where SIGINT came in ignored (a job started in the background by a script, then
    # `kill -INT`): the agent says it does, and Python raises KeyboardInterrupt only where SIGINT was not ignored
    previous_int = signal.signal(signal.SIGINT, on_term)
    previous_usr1 = signal.signal(signal.SIGUSR1, on_usr1)
    reason = "finished"
    progress = Progress(board, start)
    rings = RingMonitor([h for h in owned if isinstance(h, Ring)], run_id)
    devices = DeviceMonitor.start(say=say)  # None without an NVIDIA GPU
    next_log = start + config.run.log_interval_s
    snapshots = SnapshotSchedule(run_dir, stores, board,
                                 config.run.replay_snapshot_interval_min if keeps_replay else 0.0)
    try:
        if link is not None:
            link.start(run_id, owned, board)
        supervisor.start_all()
        while True:
            time.sleep(0.1)
            rings.sample()
            snapshots.poll()
            milestones.update(int(board.column("env_steps", "actor").sum()), int(board.get("trainer", "train_steps")))
            if supervisor.check(board, say) == "trained":
                reason = "trained"
                final_evaluation(board, supervisor, say)
                break
            if board.control("target_reached_env_steps"):
                reason = "target reached"
                break
            if link is not None and link.fatal is not None:
                reason = f"lost {link.fatal_peer}"
                say(f"[agent] lost {link.fatal_peer} ({str(link.fatal).splitlines()[0][:200]}): the run stops",
                    flush=True)
                break
            if time.time() >= next_log:
                next_log += config.run.log_interval_s
                say(progress.line(), flush=True)
                roles = board.snapshot() if link is None else link.local_rows(board.snapshot())  # others: theirs
                metrics.write(int(board.get("trainer", "train_steps")),
                              {"roles": roles, "rings": rings.report(), "cores": usable_cores(),
                               "load": os.getloadavg()[0], **device_report(devices)})
    except KeyboardInterrupt:
        reason = "interrupted"
        say("\n[agent] stopping (Ctrl-C / SIGTERM): final checkpoint, then shutting down", flush=True)
    finally:
        # Shutdown is bounded (joins with timeouts, then terminate/kill); further Ctrl-C/SIGTERM must not cut it
        # short and leave processes or shared memory behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if devices is not None:
            devices.close()
        final_serial = snapshots.finish()  # the replay role's last replay.npz carries it, and so do the frames
        board.set_control("stop", 1)
        if link is not None:
            link.stop()  # tells the other nodes to stop
        supervisor.stop()
        if keeps_replay:
            save_frames(run_dir, stores, final_serial)  # with replay.npz and the trainer's checkpoint: --resume
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGUSR1, previous_usr1)
        elapsed = time.time() - start
        snapshot = board.snapshot() if link is None else link.local_rows(board.snapshot())
        metrics.write(int(snapshot["trainer"]["train_steps"]), {"roles": snapshot, "reason": reason})
        metrics.close()
        summary = _summary(board, run_dir, start, elapsed)
        for handle in reversed(owned):
            handle.close()
    (run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    table = format_report(analyze(run_dir), per_process=True)  # the numbers tools/profile_pipeline.py shows
    say(f"[agent] {reason} after {elapsed / 60:.1f} min\n{table}", flush=True)
    return summary


def _summary(board: Board, run_dir: Path, start: float, elapsed: float) -> RunSummary:
    from speedy.metrics import read_metrics

    evals = read_metrics(run_dir / "metrics" / "evaluator.jsonl") if (run_dir / "metrics" /
                                                                       "evaluator.jsonl").exists() else []
    returns = [e["mean_return"] for e in evals if "mean_return" in e]
    reached_steps = board.control("target_reached_env_steps")
    reached_time = board.control("target_reached_time")
    return RunSummary(
        env_steps=int(board.column("env_steps", "actor").sum()),
        train_steps=int(board.get("trainer", "train_steps")),
        minutes=elapsed / 60,
        best_eval_return=max(returns) if returns else None,
        last_eval_return=returns[-1] if returns else None,
        reached_target_env_steps=int(reached_steps) if reached_steps else None,
        reached_target_minutes=(reached_time - start) / 60 if reached_time else None,
        run_dir=str(run_dir),
        restarts={name: int(v["restarts"]) for name, v in board.snapshot().items() if v.get("restarts", 0)},
    )
