"""Checkpoints: atomic writes with a previous copy, loading that cannot run code, refusals that say why, and
the state round trips a resume relies on (replay buffer, frame store, RNG)."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from speedy.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from speedy.replay import ReplayBuffer

from .test_replay import LAYOUT, make_block

CONFIG = {"env": {"id": "gym:CartPole-v1"}, "model": {"channels": 8}, "train": {"lr": 0.1}, "mcts": {},
          "replay": {}, "run": {"seed": 0}}


def state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "train_steps": step, "rng": rng_state()}


def test_round_trip_and_previous_copy(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state(1), CONFIG)
    save_checkpoint(path, state(2), CONFIG)
    assert load_checkpoint(path, config=CONFIG)["train_steps"] == 2
    assert load_checkpoint(previous_path(path), config=CONFIG)["train_steps"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_checkpoint_is_refused_and_the_previous_one_used(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state(1), CONFIG)
    save_checkpoint(path, state(2), CONFIG)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    warnings = []
    record = load_latest(path, config=CONFIG, warn=warnings.append)
    assert record["train_steps"] == 1 and torch.equal(record["model"]["w"], torch.ones(3))
    assert "truncated or corrupt" in warnings[0] and "previous checkpoint" in warnings[0]
    previous_path(path).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="and the previous one"):
        load_latest(path, config=CONFIG)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_that_would_run_code_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "speedy-checkpoint", "version": 2, "payload": Boom()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    path.write_bytes(pickle.dumps(Boom(), protocol=2))  # a bare pickle, not even a torch file
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_foreign_other_version_and_other_config_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a speedy checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "speedy-checkpoint", "version": 1}, path)
    with pytest.raises(CheckpointError, match="format version 1"):
        load_checkpoint(path)
    save_checkpoint(path, state(3), CONFIG)
    other = {**CONFIG, "model": {"channels": 16}}
    with pytest.raises(CheckpointError, match=r"another configuration \(model.channels: checkpoint 8, now 16\)"):
        load_checkpoint(path, config=other)
    assert load_checkpoint(path, config={**CONFIG, "run": {"seed": 5}})["train_steps"] == 3  # run.* may change
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(Path(tmp_path / "missing.pt"))


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    path = save_checkpoint(tmp_path / "r.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(path)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_replay_state_round_trip_through_npz(tmp_path):
    buffer = ReplayBuffer(LAYOUT, 24, 0.6, 1e-6)
    for k, length in enumerate([3, 4, 1, 4, 4, 2, 4, 4, 4, 3, 4, 4, 4]):
        buffer.add(make_block(length, first_ref=100 * k))
    buffer.update_priorities(np.array([0, 1, 2]), buffer.generation[buffer.owner[[0, 1, 2]]], np.array([3., 1, 2]))
    np.savez(tmp_path / "replay.npz", **buffer.state_dict())
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as saved:
        restored = ReplayBuffer(LAYOUT, 24, 0.6, 1e-6)
        restored.load_state_dict(dict(saved))
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    a, b = buffer.sample(16, 0.4, rng_a), restored.sample(16, 0.4, rng_b)
    assert np.array_equal(a.index, b.index) and np.allclose(a.weights, b.weights)
    assert restored.num_positions == buffer.num_positions and restored.blocks_added == buffer.blocks_added
    for name in ("frame_ids", "actions", "rewards", "policies"):
        assert np.array_equal(buffer.window(name, a, 0, 3), restored.window(name, b, 0, 3))
    with pytest.raises(ValueError, match="does not fit this buffer"):
        ReplayBuffer(LAYOUT, 32, 0.6, 1e-6).load_state_dict(buffer.state_dict())


def test_a_setting_added_since_the_checkpoint_is_accepted_at_its_default(tmp_path):
    """A run saved before a setting existed resumes while the setting keeps its default (which reproduces the old
    behaviour); moving it off the default is a different configuration."""
    from dataclasses import asdict

    from speedy.config import Config

    full = asdict(Config())
    saved = {**full, "model": {k: v for k, v in full["model"].items() if k != "downsample"}}
    path = tmp_path / "c.pt"
    save_checkpoint(path, state(4), saved)
    assert load_checkpoint(path, config=full)["train_steps"] == 4
    changed = {**full, "model": {**full["model"], "downsample": "none"}}
    with pytest.raises(CheckpointError, match=r"model.downsample: checkpoint None, now 'none'"):
        load_checkpoint(path, config=changed)


def test_resume_restores_each_average_and_falls_back_to_the_weights_acted_with(tmp_path):
    """--resume: the acting and evaluation averages come back as saved; a checkpoint without the evaluator's
    average (eval.ema_decay off, or written before it existed) resumes it from the acting weights, and one
    without either from the trained weights."""
    from speedy.checkpoint import CHECKPOINT_NAME
    from speedy.roles.resume import load_resume

    def weights(value: float) -> dict[str, torch.Tensor]:
        return {"w": torch.full((2,), value)}

    save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": weights(1.0), "target_model": weights(2.0),
                                                 "acting_model": weights(3.0), "eval_model": weights(4.0),
                                                 "train_steps": 7, "env_steps": 70}, config=CONFIG)
    state = load_resume(tmp_path, CONFIG, say=lambda *a, **k: None, with_replay=False)
    assert [float(s["w"][0]) for s in (state.model, state.target_model, state.acting_model, state.eval_model)] == [
        1.0, 2.0, 3.0, 4.0]
    assert (state.train_steps, state.env_steps, state.frames) == (7, 70, None)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": weights(1.0), "acting_model": weights(3.0),
                                                 "train_steps": 8, "env_steps": 80}, config=CONFIG)
    state = load_resume(tmp_path, CONFIG, say=lambda *a, **k: None, with_replay=False)
    assert float(state.eval_model["w"][0]) == 3.0 and float(state.target_model["w"][0]) == 1.0
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": weights(1.0), "train_steps": 9, "env_steps": 90},
                    config=CONFIG)
    state = load_resume(tmp_path, CONFIG, say=lambda *a, **k: None, with_replay=False)
    assert float(state.acting_model["w"][0]) == float(state.eval_model["w"][0]) == 1.0
