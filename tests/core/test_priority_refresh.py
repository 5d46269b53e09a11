"""Priority Refresh as inline mode runs it (`replay.refresh_interval`) and as the refresher role runs it: one sweep
sets every held position's priority to |ẑ − v(s)| with one model, ẑ its n-step value target (issue 10)."""

from __future__ import annotations

import numpy as np
import torch

from speedy.components import block_layout, build_model, reanalyze_settings, task_spec
from speedy.config import build_config
from speedy.envs import make_vector_env
from speedy.reanalyze import predicted_values, refresh_all_priorities, sample_windows
from speedy.replay import ReplayBuffer
from speedy.replay.frames import FrameSource
from speedy.selfplay import SelfPlay, random_policy
from speedy.shm.frames import FrameStore

from .test_inline_smoke import TINY_MODEL


def _filled_replay(run_id: str):  # noqa: ANN202 - test helper
    config = build_config("cartpole", overrides=[*TINY_MODEL, "replay.block_length=10", "replay.capacity=2000"])
    spec = task_spec(config)
    layout = block_layout(config, spec)
    env = make_vector_env("gym:CartPole-v1", 2, seed=5, mode="train")
    store = FrameStore.create(run_id, "frames0", spec.frame_shape, spec.frame_dtype, 4096)
    replay = ReplayBuffer(layout, config.replay.capacity, config.replay.alpha, config.replay.priority_eps)
    selfplay = SelfPlay(env, store, 0, layout, seed=5)
    rng = np.random.default_rng(5)
    for step in range(150):
        actions, policies = random_policy(2, 2, rng)
        blocks, _ = selfplay.step(actions, policies, 2 * step)
        for block in blocks:
            replay.add(block)
    env.close()
    torch.manual_seed(0)
    model = build_model(config, spec, torch.device("cpu")).eval()
    return config, spec, layout, store, replay, model


def test_a_sweep_sets_every_priority_to_the_n_step_error_of_one_model():
    config, spec, layout, store, replay, model = _filled_replay("testrefresh0")
    try:
        frames, settings = FrameSource([store]), reanalyze_settings(config, spec)
        live = replay.live_positions()
        assert live.size > 200
        updated = refresh_all_priorities(replay, frames, model, 7, layout, settings, torch.device("cpu"), 37, 300)
        assert updated == live.size
        assert np.all(replay.priority_version[live] == 7)
        # By hand: CartPole pays 1 per step, so ẑ = Σ_{i<n} γ^i + γ^n v(s_{t+n}), or Σ_{i<valid} γ^i when the
        # episode ends within n steps (random play: no time-limit cuts).
        windows = sample_windows(replay, replay.positions(live), 300)
        n, s, gamma = layout.td_steps, layout.frame_stack, settings.discount
        v_now = predicted_values(model, frames.get(windows.frame_refs[:, :s]), torch.device("cpu"), 64)
        v_boot = predicted_values(model, frames.get(windows.frame_refs[:, n : n + s]), torch.device("cpu"), 64)
        steps = np.minimum(windows.valid_steps, n)
        z = (1 - gamma**steps) / (1 - gamma) + np.where(windows.valid_steps > n, gamma**n * v_boot, 0.0)
        assert np.any(windows.valid_steps <= n) and np.any(windows.valid_steps > n)
        np.testing.assert_allclose(replay.priorities[live], np.abs(z - v_now) + config.replay.priority_eps,
                                   rtol=1e-4, atol=1e-4)
    finally:
        store.close()


def test_a_sweep_from_older_weights_keeps_newer_priorities():
    config, spec, layout, store, replay, model = _filled_replay("testrefresh1")
    try:
        frames, settings = FrameSource([store]), reanalyze_settings(config, spec)
        live = replay.live_positions()
        newer = live[:50]
        replay.update_priorities(newer, replay.generation[replay.owner[newer]], np.full(50, 123.0), version=20)
        updated = refresh_all_priorities(replay, frames, model, 10, layout, settings, torch.device("cpu"), 64, 300)
        assert updated == live.size - 50
        np.testing.assert_allclose(replay.priorities[newer], 123.0 + config.replay.priority_eps)
        assert np.all(replay.priority_version[live[50:]] == 10)
    finally:
        store.close()
