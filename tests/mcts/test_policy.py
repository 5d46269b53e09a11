"""Visit counts -> policy targets and actions; Dirichlet noise; the tie-break RNG."""

from __future__ import annotations

import numpy as np
import pytest

from speedy.components import greedy_env_mask, greedy_envs_on, root_noise_fraction
from speedy.config import ConfigError, build_config
from speedy.mcts import (
    completed_q_actions,
    completed_q_policy,
    dirichlet_noise,
    greedy_actions,
    sample_actions,
    self_play_actions,
    visit_distribution,
)
from speedy.mcts.policy import completed_q
from speedy.mcts.rng import draw_below, seed_states


def test_visit_distribution_hand_values() -> None:
    counts = np.array([[1, 3, 0], [2, 2, 4]])
    np.testing.assert_allclose(visit_distribution(counts, 1.0), [[0.25, 0.75, 0.0], [0.25, 0.25, 0.5]])
    # T = 0.5: squares: [1, 9, 0] / 10 and [4, 4, 16] / 24
    np.testing.assert_allclose(visit_distribution(counts, 0.5), [[0.1, 0.9, 0.0], [1 / 6, 1 / 6, 2 / 3]], rtol=1e-6)
    out = visit_distribution(np.array([[50, 49]]), 0.001)  # tiny T: no overflow, ~one-hot
    assert out.dtype == np.float32 and np.isfinite(out).all() and out[0, 0] > 0.99


def test_visit_distribution_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="temperature"):
        visit_distribution(np.array([[1, 2]]), 0.0)
    with pytest.raises(ValueError, match="at least one visit"):
        visit_distribution(np.array([[0, 0]]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        visit_distribution(np.array([1, 2]), 1.0)


def test_greedy_lowest_index_wins_ties() -> None:
    actions = greedy_actions(np.array([[3, 5, 5], [7, 1, 7], [0, 0, 1]]))
    assert actions.dtype == np.int64
    assert actions.tolist() == [1, 0, 2]


def test_completed_q_hand_values_and_the_action_it_picks() -> None:
    """Row 0: uniform prior, visits 3/1/0, Q 10/12, v̂ 9 → v_mix = (9 + 4 / (2/3) · (10 + 12) / 3) / 5 = 10.6 for
    the unvisited child; q̂ = [0, 1, 0.3], σ = (50 + 3) · 0.1 · q̂ = [0, 5.3, 1.59]: action 1, where the visits say 0.
    Row 1: logits 6 / 0, visits 4 / 1, Q 5.0 / 5.1: σ = [0, 5.4] cannot overcome the prior's 6: action 0.
    Row 2: one visited child only, the others' v_mix equals its Q (v̂ = Q): q̂ all 0, the prior decides (action 2)."""
    visits = np.array([[3, 1, 0], [4, 1, 0], [5, 0, 0]])
    q = np.array([[10.0, 12.0, 0.0], [5.0, 5.1, 0.0], [7.0, 0.0, 0.0]], np.float32)
    logits = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, -50.0], [0.0, 1.0, 2.0]], np.float32)
    value = np.array([9.0, 5.0, 7.0], np.float32)
    completed = completed_q(visits, q, logits, value)
    np.testing.assert_allclose(completed[0], [10.0, 12.0, 10.6], rtol=1e-6)
    np.testing.assert_allclose(completed[2], [7.0, 7.0, 7.0], rtol=1e-6)
    actions = completed_q_actions(visits, q, logits, value)
    assert actions.dtype == np.int64
    assert actions.tolist() == [1, 0, 2]
    assert greedy_actions(visits).tolist() == [0, 0, 0]
    policy = completed_q_policy(visits, q, logits, value)  # softmax of logits + σ
    assert policy.dtype == np.float32
    expected0 = np.exp([0.0, 5.3, 1.59]) / np.exp([0.0, 5.3, 1.59]).sum()
    np.testing.assert_allclose(policy[0], expected0, rtol=1e-5)
    np.testing.assert_allclose(policy[1, :2], np.exp([6.0, 5.4]) / np.exp([6.0, 5.4]).sum(), rtol=1e-4)
    np.testing.assert_allclose(policy[2], np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum(), rtol=1e-5)


def test_self_play_greedy_rows_take_the_searchs_greedy_choice() -> None:
    counts = np.array([[4, 1], [4, 1], [1, 4]])
    choice = np.array([1, 1, 0])
    greedy = np.array([True, False, True])
    actions = self_play_actions(counts, 1.0, greedy, np.random.default_rng(0), choice)
    assert actions[0] == 1 and actions[2] == 0


def test_sample_actions_frequencies_and_zero_counts() -> None:
    rng = np.random.default_rng(0)
    counts = np.tile(np.array([[1, 0, 3]]), (20000, 1))
    actions = sample_actions(counts, 1.0, rng)
    assert actions.dtype == np.int64 and actions.shape == (20000,)
    assert not (actions == 1).any()
    assert abs((actions == 2).mean() - 0.75) < 0.02


def test_dirichlet_noise_rows_are_distributions() -> None:
    noise = dirichlet_noise(np.random.default_rng(0), 5, 4, 0.3)
    assert noise.shape == (5, 4) and noise.dtype == np.float32
    np.testing.assert_allclose(noise.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_noise(np.random.default_rng(0), 5, 4, 0.0)


def test_rng_streams_are_deterministic_and_distinct() -> None:
    a, b = seed_states(42, 4), seed_states(42, 4)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 4 and (a != 0).all()
    assert not np.array_equal(seed_states(43, 4), a)
    draws = [draw_below(a, 0, 3) for _ in range(3000)]
    assert set(draws) == {0, 1, 2}
    assert all(abs(draws.count(k) / 3000 - 1 / 3) < 0.05 for k in range(3))
    np.testing.assert_array_equal(a[1:], b[1:])  # other streams untouched


def test_self_play_actions_greedy_rows_take_the_most_visited_and_keep_the_random_stream() -> None:
    counts = np.tile(np.array([[4, 1, 5]]), (4000, 1))
    greedy = np.zeros(4000, bool)
    greedy[::2] = True
    actions = self_play_actions(counts, 1.0, greedy, np.random.default_rng(0))
    assert (actions[greedy] == 2).all()
    sampled = sample_actions(counts, 1.0, np.random.default_rng(0))  # one draw per row either way
    np.testing.assert_array_equal(actions[~greedy], sampled[~greedy])
    assert abs((actions[~greedy] == 0).mean() - 0.4) < 0.03


def test_greedy_envs_are_an_actors_last_and_play_without_root_noise() -> None:
    config = build_config("cartpole", overrides=["actor.num_envs=5", "actor.greedy_envs=2",
                                                 "mcts.exploration_fraction=0.25"])
    mask = greedy_env_mask(config, greedy_envs_on(config, 0))
    assert mask.tolist() == [False, False, False, True, True]
    np.testing.assert_array_equal(root_noise_fraction(config, mask), np.array([0.25, 0.25, 0.25, 0, 0], np.float32))
    assert not greedy_env_mask(build_config("cartpole"), True).any()  # no greedy envs
    with pytest.raises(ConfigError, match="actor.greedy_envs"):
        build_config("cartpole", overrides=["actor.num_envs=5", "actor.greedy_envs=6"])


def test_greedy_envs_explore_until_greedy_envs_from() -> None:
    """actor.greedy_envs_from = 0.3 of 1,000 training steps: every env explores through step 299, the last 2 play
    greedily from step 300 on."""
    config = build_config("cartpole", overrides=["actor.num_envs=4", "actor.greedy_envs=2",
                                                 "actor.greedy_envs_from=0.3", "train.training_steps=1000"])
    assert not greedy_env_mask(config, greedy_envs_on(config, 0)).any()
    assert not greedy_env_mask(config, greedy_envs_on(config, 299)).any()
    assert greedy_env_mask(config, greedy_envs_on(config, 300)).tolist() == [False, False, True, True]
    assert greedy_env_mask(config, greedy_envs_on(config, 1000)).tolist() == [False, False, True, True]
    with pytest.raises(ConfigError, match="actor.greedy_envs_from"):
        build_config("cartpole", overrides=["actor.greedy_envs_from=1.5"])
