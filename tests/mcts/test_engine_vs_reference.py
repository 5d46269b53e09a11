"""The numba engine must make exactly the reference's choices on random trees."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from speedy.mcts import RootBatch, SearchConfig, greedy_actions
from speedy.mcts import reference as ref
from speedy.mcts import run_search as engine_search
from tests.mcts.standin import TableNet


@settings(max_examples=50, deadline=None)
@given(
    batch=st.integers(1, 8),
    actions=st.integers(2, 6),
    simulations=st.integers(1, 30),
    discount=st.floats(0.5, 1.0),
    levels=st.sampled_from([0, 2]),
    uniform_roots=st.booleans(),
    seed=st.integers(0, 2**32),
    horizon=st.sampled_from([5, 2, 0]),
)
def test_engine_matches_reference(
    batch: int, actions: int, simulations: int, discount: float, levels: int, uniform_roots: bool,
    seed: int, horizon: int,
) -> None:
    rng = np.random.default_rng(seed)
    logits = np.zeros((batch, actions), np.float32) if uniform_roots else rng.normal(
        size=(batch, actions)).astype(np.float32)
    roots = RootBatch(rng.uniform(-1, 1, batch).astype(np.float32), logits, None)
    config = SearchConfig(num_simulations=simulations, discount=discount, lstm_horizon=horizon)
    ref_net, eng_net = TableNet(seed, actions, levels), TableNet(seed, actions, levels)
    expected = ref.run_search(roots, ref_net, config, seed)
    got = engine_search(roots, eng_net, config, seed)
    for want, have in zip(ref_net.leaves, eng_net.leaves, strict=True):
        assert want.slot == have.slot
        np.testing.assert_array_equal(want.parent_slot, have.parent_slot)
        np.testing.assert_array_equal(want.action, have.action)
        np.testing.assert_array_equal(want.depth, have.depth)
        np.testing.assert_array_equal(want.reset_hidden, have.reset_hidden)
    np.testing.assert_array_equal(got.visit_counts, expected.visit_counts)
    np.testing.assert_allclose(got.root_value, expected.root_value, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.root_q, expected.root_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(greedy_actions(got.visit_counts), greedy_actions(expected.visit_counts))
    assert (got.visit_counts.sum(axis=1) == simulations).all()


def test_engine_matches_reference_with_noise() -> None:
    rng = np.random.default_rng(7)
    batch, actions = 4, 5
    noise = rng.dirichlet(np.full(actions, 0.3), size=batch).astype(np.float32)
    roots = RootBatch(np.zeros(batch, np.float32), rng.normal(size=(batch, actions)).astype(np.float32), noise)
    config = SearchConfig(num_simulations=20)
    expected = ref.run_search(roots, TableNet(1, actions), config, 11)
    got = engine_search(roots, TableNet(1, actions), config, 11)
    np.testing.assert_array_equal(got.visit_counts, expected.visit_counts)
    np.testing.assert_allclose(got.root_value, expected.root_value, rtol=1e-5, atol=1e-6)


def test_per_root_noise_fraction_matches_reference_and_zero_means_no_noise() -> None:
    """Roots 0 and 2 explore with weight 0.25, 1 with 0.6, 3 not at all: engine = reference, and root 3 searches
    exactly as it does with no noise anywhere (the greedy envs of actor.greedy_envs)."""
    rng = np.random.default_rng(3)
    batch, actions = 4, 3
    logits = rng.normal(size=(batch, actions)).astype(np.float32)
    noise = rng.dirichlet(np.full(actions, 0.3), size=batch).astype(np.float32)
    fraction = np.array([0.25, 0.6, 0.25, 0.0], np.float32)
    roots = RootBatch(np.zeros(batch, np.float32), logits, noise, fraction)
    config = SearchConfig(num_simulations=25)
    expected = ref.run_search(roots, TableNet(5, actions), config, 13)
    got = engine_search(roots, TableNet(5, actions), config, 13)
    np.testing.assert_array_equal(got.visit_counts, expected.visit_counts)
    np.testing.assert_allclose(got.root_value, expected.root_value, rtol=1e-5, atol=1e-6)
    plain = engine_search(RootBatch(np.zeros(batch, np.float32), logits, None), TableNet(5, actions), config, 13)
    np.testing.assert_array_equal(got.visit_counts[3], plain.visit_counts[3])
    uniform = engine_search(RootBatch(np.zeros(batch, np.float32), logits, noise), TableNet(5, actions), config, 13)
    np.testing.assert_array_equal(got.visit_counts[[0, 2]], uniform.visit_counts[[0, 2]])  # None = the config's 0.25
