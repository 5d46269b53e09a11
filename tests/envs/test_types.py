"""Shared helpers: episode bookkeeping, per-env seeds, action validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speedy.envs.types import EpisodeTracker, check_actions, env_seeds


def test_episode_tracker_hand_values():
    tracker = EpisodeTracker(2)
    tracker.update(np.array([1.0, 2.0]), np.array([False, False]))
    returns, lengths = tracker.update(np.array([3.0, -1.0]), np.array([True, False]))
    np.testing.assert_array_equal(returns, [4.0, np.nan])
    np.testing.assert_array_equal(lengths, [2, 0])
    returns, lengths = tracker.update(np.array([5.0, 0.0]), np.array([True, True]))
    np.testing.assert_array_equal(returns, [5.0, 1.0])
    np.testing.assert_array_equal(lengths, [1, 3])
    assert returns.dtype == np.float32 and lengths.dtype == np.int32


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-30, 30), st.booleans()), min_size=1, max_size=40))
def test_episode_tracker_returns_sum_all_rewards(steps):
    """Summed reported returns + the running return = total reward; lengths likewise count steps."""
    tracker = EpisodeTracker(1)
    reported, reported_len = 0.0, 0
    for reward, done in steps:
        r, n = tracker.update(np.array([float(reward)]), np.array([done]))
        assert np.isnan(r[0]) != done
        if done:
            reported += float(r[0])
            reported_len += int(n[0])
    assert reported + tracker.returns[0] == sum(r for r, _ in steps)
    assert reported_len + tracker.lengths[0] == len(steps)


def test_env_seeds_distinct_and_independent_of_neighbours():
    a, b = env_seeds(0, 8), env_seeds(1, 8)
    assert len(set(a.tolist())) == 8 and not set(a.tolist()) & set(b.tolist())
    np.testing.assert_array_equal(env_seeds(0, 8), a)
    assert ((a >= 0) & (a < 2**31)).all()


def test_check_actions():
    out = check_actions(np.array([0, 3], np.int64), 2, 4)
    assert out.dtype == np.int32 and out.tolist() == [0, 3]
    with pytest.raises(ValueError, match="shape"):
        check_actions(np.array([[0, 1]]), 2, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        check_actions(np.array([-1, 0]), 2, 4)
