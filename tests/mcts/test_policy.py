"""Visit counts -> policy targets and actions; Dirichlet noise; the tie-break RNG."""

from __future__ import annotations

import numpy as np
import pytest

from speedy.mcts import dirichlet_noise, greedy_actions, sample_actions, visit_distribution
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
