"""What a single-box run keeps when it stops, and how `run.py --resume RUN_DIR` puts it back.

On a clean stop (end of training, Ctrl-C, SIGTERM) a run directory holds:

    checkpoint.pt (+ .prev)  model, target model, optimizer, counters, RNG states (trainer; also every
                             `run.checkpoint_interval_steps` steps / `run.checkpoint_interval_min` minutes)
    replay.npz               the replay buffer: trajectories, priorities, sum-tree, counters (replay role)
    frames.npz               every frame still held by each actor's frame store, with its ids (node agent)

While it runs, every `run.replay_snapshot_interval_min` minutes the agent asks the replay role for a snapshot
(replay.npz, written from a copy in a worker thread, so sampling goes on) and, once it is written, appends the frames
stored since the last time to frames/store<i>.bin (`FrameJournal`; each frame is written once, however often it is
snapshotted) and then replaces frames/journal.json. Every snapshot carries a serial: `--resume` takes the replay
buffer only with frames of the same serial (frames.npz after a clean stop, else the journal), so a crash between the
two writes costs the buffer, never its consistency.

All three hold only arrays and plain values: loading them runs no code. `--resume` loads the newest usable
checkpoint (falling back to the previous one), publishes its weights as version `train_steps` (the trainer
continues its step count, LR schedule and optimizer from there), refills the frame stores with the same ids (so
the replay's frame refs stay valid), hands replay.npz to the replay role, and credits the actors with the
checkpoint's env steps. After a crash (kill -9) only the periodic checkpoint exists: the run resumes with its
weights and optimizer and the last periodic replay snapshot with its journaled frames (or, without one, an empty
buffer, and the actors get `replay.start_env_steps` extra env steps to refill it).
Environment states (episodes in progress) are not kept: a resumed run starts new episodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from speedy.checkpoint import CHECKPOINT_NAME, load_latest, save_arrays, write_text_atomic
from speedy.roles.context import RolePlan
from speedy.roles.replay import RESUME_SNAPSHOT, SNAPSHOT
from speedy.shm.frames import FrameEvictedError, FrameStore

FRAMES_SNAPSHOT = "frames.npz"
JOURNAL_DIR = "frames"
JOURNAL_MANIFEST = "journal.json"
NO_SERIAL = -1  # snapshots written before serials existed


@dataclass
class ResumeState:
    """What `--resume` restores. Weights are torch state dicts (CPU); frames[i] = (first id, frames (n, ...))."""

    model: dict[str, Any]
    target_model: dict[str, Any]
    acting_model: dict[str, Any]  # the average the acting roles use (train.acting_ema_decay); the model if none
    eval_model: dict[str, Any]  # the average the evaluator plays (eval.ema_decay); the acting weights if none
    train_steps: int
    env_steps: int
    frames: list[tuple[int, np.ndarray]] | None
    has_replay: bool


def _serial(path: Path) -> int | None:
    """The snapshot serial stored in an .npz (NO_SERIAL if it predates serials), None if there is no file."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return int(saved["snapshot_serial"]) if "snapshot_serial" in saved.files else NO_SERIAL


def _frames_of(run_dir: Path, replay_serial: int | None,
               capacity: Callable[[int], int] | None) -> tuple[list[tuple[int, np.ndarray]] | None, str]:
    """The frames that match the replay snapshot's serial (frames.npz, else the journal), and where from."""
    if replay_serial is None:
        return None, "no replay snapshot"
    if _serial(run_dir / FRAMES_SNAPSHOT) == replay_serial:
        with np.load(run_dir / FRAMES_SNAPSHOT, allow_pickle=False) as saved:
            return [(int(saved[f"first{i}"]), saved[f"frames{i}"]) for i in range(int(saved["actors"]))], "frames.npz"
    journal = read_journal(run_dir, capacity)
    if journal is not None and journal[0] == replay_serial:
        return journal[1], "the frame journal"
    return None, "no frames of the same snapshot"


def load_resume(run_dir: Path, config_dict: dict[str, Any], say: Any = print,
                frame_capacity: Callable[[int], int] | None = None, with_replay: bool = True) -> ResumeState:
    """Read a stopped run's checkpoint (CheckpointError if none is usable) and, `with_replay` (this node hosts
    replay), its frame/replay snapshots (`frame_capacity(stores)`: frames per store the resumed run keeps; the
    newest of the journal are read)."""
    record = load_latest(run_dir / CHECKPOINT_NAME, "cpu", config_dict, warn=lambda m: say(f"[agent] {m}"))
    frames = load_replay_frames(run_dir, say, frame_capacity) if with_replay else None
    acting = record.get("acting_model") or record["model"]
    return ResumeState(record["model"], record.get("target_model") or record["model"], acting,
                       record.get("eval_model") or acting, int(record["train_steps"]),
                       int(record["env_steps"]), frames, frames is not None)


def load_replay_frames(run_dir: Path, say: Any = print,
                       frame_capacity: Callable[[int], int] | None = None) -> list[tuple[int, np.ndarray]] | None:
    """The frames of the replay snapshot in `run_dir` (the node that hosts replay), None if there is no usable
    pair: a buffer without its frames (or frames without a buffer) is of no use."""
    frames, source = _frames_of(run_dir, _serial(run_dir / SNAPSHOT), frame_capacity)
    if frames is not None:
        say(f"[agent] replay buffer and frames from {source}", flush=True)
    elif (run_dir / SNAPSHOT).exists():
        say(f"[agent] replay snapshot not used: {source}", flush=True)
    return frames


def resume_plan(plan: RolePlan, state: ResumeState) -> RolePlan:
    """The saved frame refs name actor stores by index: a resumed run keeps the number of actors it had."""
    return plan if state.frames is None else replace(plan, actors=len(state.frames))


def restore_shared_state(state: ResumeState, run_dir: Path, stores: list[FrameStore], board: Any,
                         start_env_steps: int) -> None:
    """Refill the frame stores, hand the replay snapshot to the replay role, and credit the actors' env steps."""
    if state.frames is not None:
        for store, (first, frames) in zip(stores, state.frames, strict=True):
            store.restore(first, frames)
    if state.has_replay:
        os.replace(run_dir / SNAPSHOT, run_dir / RESUME_SNAPSHOT)
    credited = state.env_steps if state.has_replay else max(0, state.env_steps - start_env_steps)
    actors = len(stores)
    for i in range(actors):
        board.row(f"actor{i}").set("env_steps", credited // actors + (1 if i < credited % actors else 0))
    board.set_control("resumed_env_steps", credited)  # the actors' data/update bound counts from here until training


def save_frames(run_dir: Path, stores: list[FrameStore], serial: int = NO_SERIAL) -> Path:
    """Write every frame the stores still hold, with ids, to run_dir/frames.npz atomically (writers stopped);
    `serial`: that of the replay snapshot written at the same stop."""
    arrays: dict[str, np.ndarray] = {"actors": np.asarray(len(stores)), "snapshot_serial": np.asarray(serial)}
    for i, store in enumerate(stores):
        first, frames = store.snapshot()
        arrays[f"first{i}"] = np.asarray(first)
        arrays[f"frames{i}"] = frames
    return save_arrays(run_dir / FRAMES_SNAPSHOT, arrays)


class FrameJournal:
    """Crash-safe, incremental copy of a node's frame stores in run_dir/frames/: store<i>.bin holds raw frames in
    id order from `first`, journal.json {serial, stores: [{first, count, shape, dtype}]} says how many are whole.

    `append(serial)` writes the frames stored since the last call (fsynced) and then replaces the manifest, so a
    crash mid-append leaves the previous manifest true. A gap (frames evicted before they were journaled) restarts
    that store's file at its oldest frame. The files grow with the run (every frame once: ≈ 2.8 GB per 100k
    96×96×3 frames); a run starts its journal afresh."""

    def __init__(self, run_dir: Path, stores: list[FrameStore]) -> None:
        self.dir = Path(run_dir) / JOURNAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stores = stores
        self.first = [store.oldest_id() for store in stores]
        self.count = [0] * len(stores)
        (self.dir / JOURNAL_MANIFEST).unlink(missing_ok=True)  # no manifest may describe the files emptied below
        for i in range(len(stores)):
            self._path(i).write_bytes(b"")

    def _path(self, i: int) -> Path:
        return self.dir / f"store{i}.bin"

    def append(self, serial: int) -> None:
        for i, store in enumerate(self.stores):
            self._append_store(i, store)
        manifest = {"serial": int(serial), "stores": [
            {"first": self.first[i], "count": self.count[i], "shape": list(s.frame_shape), "dtype": s.dtype.str}
            for i, s in enumerate(self.stores)]}
        write_text_atomic(self.dir / JOURNAL_MANIFEST, json.dumps(manifest))

    def _append_store(self, i: int, store: FrameStore) -> None:
        upto = store.next_id
        with open(self._path(i), "r+b") as handle:
            while self.first[i] + self.count[i] < upto:
                start = self.first[i] + self.count[i]
                if start < store.oldest_id():  # evicted before it was journaled: restart the file
                    self.first[i], self.count[i] = store.oldest_id(), 0
                    handle.truncate(0)
                    continue
                ids = np.arange(start, min(upto, start + 4096), dtype=np.int64)
                try:
                    frames = store.get(ids)
                except FrameEvictedError:
                    continue  # overwritten while read: the check above restarts from the new oldest
                handle.seek(self.count[i] * frames[0].nbytes)
                handle.write(np.ascontiguousarray(frames).tobytes())
                self.count[i] += len(ids)
            handle.flush()
            os.fsync(handle.fileno())


def read_journal(run_dir: Path, capacity: Callable[[int], int] | None = None,
                 ) -> tuple[int, list[tuple[int, np.ndarray]]] | None:
    """(serial, [(first id, frames)] per store) from run_dir/frames/, the newest `capacity(stores)` frames of each
    store (all if None); None if there is no whole journal."""
    directory = Path(run_dir) / JOURNAL_DIR
    try:
        manifest = json.loads((directory / JOURNAL_MANIFEST).read_text())
        limit = None if capacity is None else capacity(len(manifest["stores"]))
        out = []
        for i, entry in enumerate(manifest["stores"]):
            shape, dtype, count = tuple(entry["shape"]), np.dtype(entry["dtype"]), int(entry["count"])
            keep = count if limit is None else min(count, limit)
            frame_bytes = int(np.prod(shape)) * dtype.itemsize
            data = np.fromfile(directory / f"store{i}.bin", dtype=np.uint8, count=keep * frame_bytes,
                               offset=(count - keep) * frame_bytes)
            if data.size != keep * frame_bytes:
                return None
            out.append((int(entry["first"]) + count - keep, data.view(dtype).reshape(keep, *shape)))
        return int(manifest["serial"]), out
    except (OSError, ValueError, KeyError, TypeError):
        return None
