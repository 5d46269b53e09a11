"""Gymnasium vector envs: CartPole shapes, same-step autoreset, caps and errors."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from speedy.envs import env_spec, make_vector_env
from speedy.envs.gym_env import check_gym_spaces


def test_cartpole_spec_and_shapes():
    spec = env_spec("CartPole-v1")
    assert spec.env_id == "gym:CartPole-v1" and spec.kind == "gym"
    assert spec.frame_shape == (4,) and spec.frame_dtype == np.float32 and spec.frame_stack == 1
    assert spec.num_actions == 2 and len(spec.action_meanings) == 2
    assert env_spec("CartPole-v1", frame_stack=3).frame_stack == 3
    env = make_vector_env("CartPole-v1", 3, seed=0, mode="train")
    try:
        first = env.reset(0)
        assert first.frames.shape == (3, 4) and first.frames.dtype == np.float32
        assert not first.terminated.any() and np.isnan(first.episode_returns).all()
        step = env.step(np.array([0, 1, 0]))
        assert step.frames.shape == (3, 4) and (step.rewards == 1).all() and (step.raw_rewards == 1).all()
    finally:
        env.close()


def test_same_seed_same_episode_different_seed_different():
    a = make_vector_env("CartPole-v1", 2, seed=0, mode="train")
    b = make_vector_env("CartPole-v1", 2, seed=0, mode="train")
    try:
        fa, fb = a.reset(0).frames, b.reset(0).frames
        np.testing.assert_array_equal(fa, fb)
        assert not np.array_equal(fa[0], fa[1])  # envs of one vector env get distinct seeds
        assert not np.array_equal(a.reset(1).frames, fa)
    finally:
        a.close()
        b.close()


def test_autoreset_returns_first_frame_of_next_episode():
    """Pushing left ends CartPole in ~10 steps; the frame of the ending step is a fresh start state."""
    env = make_vector_env("CartPole-v1", 2, seed=0, mode="train")
    try:
        env.reset(0)
        lengths = np.zeros(2, int)
        done_seen = np.zeros(2, bool)
        for _ in range(60):
            step = env.step(np.zeros(2, np.int64))
            lengths += 1
            for i in np.flatnonzero(step.game_over):
                assert step.terminated[i] and not step.truncated[i]
                assert step.episode_lengths[i] == lengths[i] and step.episode_returns[i] == lengths[i]
                assert np.abs(step.frames[i]).max() <= 0.05  # CartPole starts uniformly in [-0.05, 0.05]
                lengths[i] = 0
                done_seen[i] = True
            ongoing = ~step.game_over
            assert np.isnan(step.episode_returns[ongoing]).all() and (step.episode_lengths[ongoing] == 0).all()
        assert done_seen.all()
    finally:
        env.close()


def test_eval_cap_truncates():
    env = make_vector_env("CartPole-v1", 1, seed=0, mode="eval", max_frames_eval=5)
    try:
        env.reset(0)
        for i in range(5):
            step = env.step(np.array([i % 2]))  # alternate: cannot fall within 5 steps
        assert step.truncated[0] and step.game_over[0] and not step.terminated[0]
        assert step.episode_lengths[0] == 5 and step.episode_returns[0] == 5.0
    finally:
        env.close()


def _balance(frames: np.ndarray) -> np.ndarray:
    """A PD controller that keeps CartPole up (and the cart near the centre) for thousands of steps."""
    x, x_dot, theta, theta_dot = frames.T
    return (theta + 0.5 * theta_dot + 0.02 * x + 0.1 * x_dot > 0).astype(np.int64)


@pytest.mark.parametrize("mode, episode_length", [("eval", 500), ("train", 700)])
def test_registered_time_limit_applies_to_eval_only(mode, episode_length):
    """CartPole-v1 registers a 500-step limit: evaluation keeps it (the benchmark's score cap); training episodes run
    to max_frames_train instead, because replay treats an episode end as terminal."""
    env = make_vector_env("CartPole-v1", 2, seed=0, mode=mode, max_frames_train=700)
    try:
        frames = env.reset(0).frames
        steps = 0
        while steps < 800:
            step = env.step(_balance(frames))
            frames, steps = step.frames, steps + 1
            if step.game_over.any():
                break
        assert steps == episode_length and step.game_over.all() and step.truncated.all() and not step.terminated.any()
        np.testing.assert_array_equal(step.episode_returns, episode_length)
    finally:
        env.close()


def test_unknown_gym_id_suggests_close_matches():
    with pytest.raises(ValueError, match="CartPole-v1") as info:
        make_vector_env("gym:CartPol-v1", 1, seed=0, mode="train")
    assert "pprint_registry" in str(info.value)


def test_continuous_actions_rejected():
    with pytest.raises(ValueError, match="Discrete action space"):
        make_vector_env("Pendulum-v1", 1, seed=0, mode="train")


def test_non_vector_observation_rejected():
    with pytest.raises(ValueError, match="1-D Box observation"):
        env_spec("FrozenLake-v1")  # Discrete observation
    with pytest.raises(ValueError, match="1-D Box observation"):
        check_gym_spaces("x", spaces.Discrete(3), spaces.Box(0, 1, shape=(2, 2)))
    check_gym_spaces("x", spaces.Discrete(3), spaces.Box(0, 1, shape=(5,)))  # accepted


def test_bad_actions():
    env = make_vector_env("CartPole-v1", 2, seed=0, mode="train")
    try:
        env.reset(0)
        with pytest.raises(ValueError, match=r"\[0, 2\)"):
            env.step(np.array([0, 2]))
    finally:
        env.close()
