"""Atari protocol checks on real ROMs (EfficientZero: DESIGN.md §3), one thread each."""

from __future__ import annotations

import numpy as np
import pytest

from speedy.envs import env_spec, make_vector_env
from speedy.envs.atari import FRAME_SKIP, NOOP_MAX, clip_reward
from tests.envs.ale_oracle import HandAle, area_resize_chw


def _random_actions(n_steps: int, num_envs: int, num_actions: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_actions, size=(n_steps, num_envs))


@pytest.mark.parametrize(("game", "num_actions"), [("Breakout", 4), ("Pong", 6)])
def test_shapes_dtypes_and_minimal_action_set(game, num_actions):
    spec = env_spec(game)
    assert spec.num_actions == num_actions and len(spec.action_meanings) == num_actions
    assert spec.frame_shape == (3, 96, 96) and spec.frame_dtype == np.uint8 and spec.frame_stack == 4
    assert spec.action_meanings[0] == "NOOP"
    env = make_vector_env(game, 3, seed=0, mode="train")
    try:
        first = env.reset(0)
        assert first.frames.shape == (3, 3, 96, 96) and first.frames.dtype == np.uint8
        assert not first.terminated.any() and not first.game_over.any() and (first.rewards == 0).all()
        assert np.isnan(first.episode_returns).all()
        step = env.step(np.zeros(3, np.int64))
        assert step.frames.shape == (3, 3, 96, 96) and step.frames.dtype == np.uint8
        assert step.rewards.dtype == np.float32 and step.raw_rewards.dtype == np.float32
        assert step.terminated.dtype == bool and step.episode_lengths.dtype == np.int32
    finally:
        env.close()


def test_small_frame_size():
    env = make_vector_env("Breakout", 1, seed=0, mode="eval", frame_size=64)
    try:
        assert env.reset(0).frames.shape == (1, 3, 64, 64)
    finally:
        env.close()


def test_noop_starts_vary_and_seeds_reproduce():
    env = make_vector_env("Breakout", 6, seed=1, mode="train")
    try:
        a = env.reset(1)
        starts = env.episode_frame_numbers.copy()
        assert ((starts >= 0) & (starts < NOOP_MAX)).all()
        assert len(set(starts.tolist())) >= 3  # 6 draws from 30 offsets
        b = env.reset(1)
        np.testing.assert_array_equal(env.episode_frame_numbers, starts)
        np.testing.assert_array_equal(a.frames, b.frames)
        env.reset(2)
        assert not np.array_equal(env.episode_frame_numbers, starts)
    finally:
        env.close()


def test_pong_starts_differ_in_pixels():
    """The opening screen is static; once the ball moves, different no-op offsets show different frames."""
    env = make_vector_env("Pong", 4, seed=0, mode="eval")
    try:
        env.reset(0)
        assert len(set(env.episode_frame_numbers.tolist())) > 1
        for _ in range(20):
            frames = env.step(np.zeros(4, np.int64)).frames
        assert len({f.tobytes() for f in frames}) > 1
    finally:
        env.close()


@pytest.mark.parametrize("game", ["breakout", "pong"])
def test_frame_skip_and_max_pool_match_hand_run_ale(game):
    """Every frame equals max(screen 3, screen 4) of 4 repeated actions, area-resized (±0.5 rounding)."""
    env = make_vector_env(game, 1, seed=3, mode="eval")
    try:
        step = env.reset(3)
        hand = HandAle(game)
        ref = area_resize_chw(hand.reset(int(env.episode_frame_numbers[0])), 96)
        assert np.abs(step.frames[0] - ref).max() <= 0.5 + 1e-6
        pool_mattered = False
        for action in _random_actions(60, 1, env.spec.num_actions)[:, 0]:
            before = int(env.episode_frame_numbers[0])
            step = env.step(np.array([action]))
            assert env.episode_frame_numbers[0] == before + FRAME_SKIP
            pooled, reward = hand.step(int(action))
            assert np.abs(step.frames[0] - area_resize_chw(pooled, 96)).max() <= 0.5 + 1e-6
            assert step.raw_rewards[0] == reward
            last_only = area_resize_chw(hand.ale.getScreenRGB(), 96)
            pool_mattered |= bool(np.abs(step.frames[0] - last_only).max() > 1.0)
        assert pool_mattered, "max-pool never changed a frame: the check did not exercise it"
    finally:
        env.close()


def test_episodic_life_in_train_only_and_the_game_continues():
    """Same seed, same actions: train reports each life loss as terminated while eval plays on."""
    train = make_vector_env("Breakout", 1, seed=5, mode="train")
    evals = make_vector_env("Breakout", 1, seed=5, mode="eval")
    try:
        np.testing.assert_array_equal(train.reset(5).frames, evals.reset(5).frames)
        life_losses = 0
        for action in _random_actions(3000, 1, 4, seed=1)[:, 0]:
            lives_before = int(evals.lives[0])
            tr, ev = train.step(np.array([action])), evals.step(np.array([action]))
            if ev.game_over[0]:
                break
            np.testing.assert_array_equal(tr.frames, ev.frames)  # one game: a life loss does not reset
            assert not ev.terminated[0]
            lost = int(evals.lives[0]) < lives_before
            assert tr.terminated[0] == lost and not tr.game_over[0] and not tr.truncated[0]
            assert np.isnan(tr.episode_returns[0])
            life_losses += lost
        else:
            pytest.fail("random Breakout did not end within 3000 steps")
        assert life_losses == 4  # 5 lives: 4 losses end training episodes, the 5th ends the game
        assert tr.game_over[0] and tr.terminated[0] and ev.game_over[0] and ev.terminated[0]
        assert tr.episode_returns[0] == ev.episode_returns[0] and tr.episode_lengths[0] == ev.episode_lengths[0]
        assert ev.episode_lengths[0] > 0
        assert train.lives[0] == 5 and train.episode_frame_numbers[0] < NOOP_MAX  # a fresh game
    finally:
        train.close()
        evals.close()


def test_reward_clipping_in_train_only():
    """Ms. Pac-Man pellets are worth 10: train rewards are sign-clipped, raw rewards pass through."""
    train = make_vector_env("MsPacman", 2, seed=0, mode="train")
    evals = make_vector_env("MsPacman", 2, seed=0, mode="eval")
    try:
        train.reset(0)
        evals.reset(0)
        saw_big = False
        for actions in _random_actions(150, 2, train.spec.num_actions):
            tr, ev = train.step(actions), evals.step(actions)
            np.testing.assert_array_equal(tr.rewards, np.sign(tr.raw_rewards))
            np.testing.assert_array_equal(ev.rewards, ev.raw_rewards)
            np.testing.assert_array_equal(tr.raw_rewards, ev.raw_rewards)
            saw_big |= bool((tr.raw_rewards > 1).any())
        assert saw_big
    finally:
        train.close()
        evals.close()


def test_clip_reward_values():
    np.testing.assert_array_equal(clip_reward(np.array([-7, -1, 0, 0.5, 1, 400])), [-1, -1, 0, 1, 1, 1])
    assert clip_reward(np.array([3])).dtype == np.float32


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_frame_cap_truncates_and_resets(mode):
    caps = {"max_frames_train": 100} if mode == "train" else {"max_frames_eval": 100}
    env = make_vector_env("Pong", 2, seed=0, mode=mode, **caps)
    try:
        env.reset(0)
        for i in range(25):
            step = env.step(np.zeros(2, np.int64))
            if i < 24:
                assert not step.truncated.any() and not step.game_over.any()
        assert step.truncated.all() and step.game_over.all() and not step.terminated.any()
        np.testing.assert_array_equal(step.episode_lengths, [25, 25])
        assert (env.episode_frame_numbers < NOOP_MAX).all()  # already the next game
        assert not np.isnan(step.episode_returns).any()
    finally:
        env.close()


def test_sticky_actions_option():
    plain = make_vector_env("Breakout", 1, seed=0, mode="eval")
    sticky = make_vector_env("Breakout", 1, seed=0, mode="eval", sticky_action_prob=0.25)
    try:
        plain.reset(0)
        sticky.reset(0)
        differ = False
        for action in _random_actions(200, 1, 4)[:, 0]:
            a, b = plain.step(np.array([action])), sticky.step(np.array([action]))
            differ |= not np.array_equal(a.frames, b.frames)
        assert differ
    finally:
        plain.close()
        sticky.close()
    with pytest.raises(ValueError, match="sticky_action_prob"):
        make_vector_env("Breakout", 1, seed=0, mode="eval", sticky_action_prob=1.5)


def test_bad_actions_and_arguments():
    env = make_vector_env("Breakout", 2, seed=0, mode="train")
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2, np.int64))
        env.reset(env.seed)
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(3, np.int64))
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            env.step(np.array([0, 4]))
        with pytest.raises(ValueError, match="integers"):
            env.step(np.array([0.0, 1.0]))
    finally:
        env.close()
    with pytest.raises(ValueError, match="mode"):
        make_vector_env("Breakout", 1, seed=0, mode="test")
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env("Breakout", 0, seed=0, mode="train")


@pytest.mark.parametrize("bad", ["Breakot", "atari:breakot", "ALE/Breakot-v5"])
def test_unknown_game_error_names_close_matches(bad):
    with pytest.raises(ValueError, match="breakout") as info:
        make_vector_env(bad, 1, seed=0, mode="train")
    assert "get_all_rom_ids" in str(info.value)
