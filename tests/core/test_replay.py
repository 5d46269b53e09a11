import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speedy.replay import BlockLayout, ReplayBuffer, SumTree, TrajectoryBlock


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=300), st.data())
@settings(max_examples=60, deadline=None)
def test_sumtree_sums_match_after_updates(values, data):
    tree = SumTree(len(values))
    tree.set(np.arange(len(values)), np.array(values))
    assert np.isclose(tree.total, sum(values))
    updates = data.draw(st.lists(st.tuples(st.integers(0, len(values) - 1), st.floats(0, 100)), max_size=20))
    expected = list(values)
    for index, value in updates:
        tree.set(np.array([index]), np.array([value]))
        expected[index] = value
    assert np.isclose(tree.total, sum(expected))
    np.testing.assert_allclose(tree.get(np.arange(len(values))), expected)
    if sum(expected) > 0:
        leaves = tree.sample(64, np.random.default_rng(0))
        assert np.all(np.array(expected)[leaves] > 0)  # never a zero-priority leaf


def test_sumtree_sampling_proportions():
    # priorities 1:2:3:4 (+ a zero leaf): expected frequencies 0.1, 0.2, 0.3, 0.4, 0
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    rng = np.random.default_rng(1)
    counts = np.bincount(np.concatenate([tree.sample(100, rng) for _ in range(400)]), minlength=5)
    freq = counts / counts.sum()
    # 40k draws: binomial std ≤ 0.0025, stratification makes it smaller; 0.01 is a 4σ band
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4, 0.0], atol=0.01)


def test_sumtree_rejects_bad_values():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="finite"):
        tree.set(np.array([0]), np.array([-1.0]))
    with pytest.raises(IndexError):
        tree.set(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="empty"):
        tree.sample(2, np.random.default_rng(0))


LAYOUT = BlockLayout(block_length=4, unroll_steps=2, td_steps=2, frame_stack=2, num_actions=3)


def make_block(length: int, first_ref: int = 0, valid: int | None = None) -> TrajectoryBlock:
    look = LAYOUT.lookahead
    return TrajectoryBlock(
        frame_ids=np.arange(first_ref, first_ref + LAYOUT.frame_stack - 1 + length + look),
        actions=np.ones(length + LAYOUT.unroll_steps, dtype=np.int64),
        rewards=np.ones(length + look, dtype=np.float32),
        policies=np.full((length + LAYOUT.unroll_steps, 3), 1 / 3, dtype=np.float32),
        length=length,
        valid_steps=valid if valid is not None else length + look,
        collected_at=first_ref,
    )


def test_replay_new_data_gets_max_priority_and_eviction_is_fifo():
    replay = ReplayBuffer(LAYOUT, capacity=8, alpha=0.6, priority_eps=1e-6)  # 2 block slots of 4
    replay.add(make_block(4))
    sample = replay.sample(8, 0.4, np.random.default_rng(0))
    assert set(sample.position) <= {0, 1, 2, 3} and np.all(sample.weights <= 1.0)
    replay.update_priorities(sample.index[:1], sample.generation[:1], np.array([3.0]))
    assert np.isclose(replay.max_priority, 3.0 + 1e-6)
    slot = replay.add(make_block(2, first_ref=100))
    assert slot == 1 and replay.num_positions == 6
    assert np.isclose(replay.tree.get(np.array([4]))[0], (3.0 + 1e-6) ** 0.6)  # new data at max priority
    assert replay.tree.get(np.array([6]))[0] == 0.0  # padding positions of a short block are never sampled
    replay.add(make_block(4, first_ref=200))  # evicts slot 0
    assert replay.collected_at[0] == 200 and replay.num_positions == 6


def test_stale_priority_updates_are_ignored():
    replay = ReplayBuffer(LAYOUT, capacity=4, alpha=1.0, priority_eps=0.0)  # one slot
    replay.add(make_block(4))
    sample = replay.sample(4, 1.0, np.random.default_rng(0))
    replay.add(make_block(4, first_ref=50))  # overwrites the sampled block
    assert replay.update_priorities(sample.index, sample.generation, np.full(4, 9.0)) == 0
    assert replay.max_priority == 1.0


def test_importance_weights_hand_computed():
    # α = 1, priorities 1 and 3 over N = 2 positions: P = .25, .75; w = (N·P)^−1 = 2, 2/3 → normalised 1, 1/3
    layout = BlockLayout(block_length=2, unroll_steps=1, td_steps=1, frame_stack=1, num_actions=2)
    replay = ReplayBuffer(layout, capacity=2, alpha=1.0, priority_eps=0.0)
    block = TrajectoryBlock(np.arange(4), np.zeros(3, np.int64), np.zeros(4, np.float32),
                            np.zeros((3, 2), np.float32), 2, 4, 0)
    replay.add(block, priorities=np.array([1.0, 3.0]))
    sample = replay.sample(200, 1.0, np.random.default_rng(0))
    by_position = dict(zip(sample.position.tolist(), sample.weights.tolist(), strict=True))
    assert np.isclose(by_position[0], 1.0) and np.isclose(by_position[1], 1 / 3)


def test_block_shape_errors_name_the_field():
    replay = ReplayBuffer(LAYOUT, capacity=8, alpha=0.6, priority_eps=1e-6)
    block = make_block(3)
    block.rewards = block.rewards[:-1]
    with pytest.raises(ValueError, match="rewards"):
        replay.add(block)
