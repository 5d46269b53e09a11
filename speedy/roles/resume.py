"""What a single-box run keeps when it stops, and how `run.py --resume RUN_DIR` puts it back.

On a clean stop (end of training, Ctrl-C, SIGTERM) a run directory holds:

    checkpoint.pt (+ .prev)  model, target model, optimizer, counters, RNG states (trainer; also every
                             `run.checkpoint_interval_steps` steps / `run.checkpoint_interval_min` minutes)
    replay.npz               the replay buffer: trajectories, priorities, sum-tree, counters (replay role)
    frames.npz               every frame still held by each actor's frame store, with its ids (node agent)

All three hold only arrays and plain values: loading them runs no code. `--resume` loads the newest usable
checkpoint (falling back to the previous one), publishes its weights as version `train_steps` (the trainer
continues its step count, LR schedule and optimizer from there), refills the frame stores with the same ids (so
the replay's frame refs stay valid), hands replay.npz to the replay role, and credits the actors with the
checkpoint's env steps. After a crash (kill -9) only the periodic checkpoint exists: the run resumes with its
weights and optimizer and an empty buffer, and the actors get `replay.start_env_steps` extra env steps to refill it.
Environment states (episodes in progress) are not kept: a resumed run starts new episodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from speedy.checkpoint import CHECKPOINT_NAME, load_latest, save_arrays
from speedy.roles.context import RolePlan
from speedy.roles.replay import RESUME_SNAPSHOT, SNAPSHOT
from speedy.shm.frames import FrameStore

FRAMES_SNAPSHOT = "frames.npz"


@dataclass
class ResumeState:
    """What `--resume` restores. Weights are torch state dicts (CPU); frames[i] = (first id, frames (n, ...))."""

    model: dict[str, Any]
    target_model: dict[str, Any]
    train_steps: int
    env_steps: int
    frames: list[tuple[int, np.ndarray]] | None
    has_replay: bool


def load_resume(run_dir: Path, config_dict: dict[str, Any], say: Any = print) -> ResumeState:
    """Read a stopped run's checkpoint (CheckpointError if none is usable) and its frame/replay snapshots."""
    record = load_latest(run_dir / CHECKPOINT_NAME, "cpu", config_dict, warn=lambda m: say(f"[agent] {m}"))
    frames = None
    has_replay = (run_dir / SNAPSHOT).exists()
    if (run_dir / FRAMES_SNAPSHOT).exists() and has_replay:
        with np.load(run_dir / FRAMES_SNAPSHOT, allow_pickle=False) as saved:
            count = int(saved["actors"])
            frames = [(int(saved[f"first{i}"]), saved[f"frames{i}"]) for i in range(count)]
    else:
        has_replay = False  # a buffer without its frames (or frames without a buffer) is of no use
    return ResumeState(record["model"], record.get("target_model") or record["model"], int(record["train_steps"]),
                       int(record["env_steps"]), frames, has_replay)


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


def save_frames(run_dir: Path, stores: list[FrameStore]) -> Path:
    """Write every frame the stores still hold, with ids, to run_dir/frames.npz atomically (writers stopped)."""
    arrays: dict[str, np.ndarray] = {"actors": np.asarray(len(stores))}
    for i, store in enumerate(stores):
        first, frames = store.snapshot()
        arrays[f"first{i}"] = np.asarray(first)
        arrays[f"frames{i}"] = frames
    return save_arrays(run_dir / FRAMES_SNAPSHOT, arrays)
