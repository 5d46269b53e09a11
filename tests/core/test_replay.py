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


def test_new_data_enters_at_the_current_max_priority_and_eviction_is_fifo():
    replay = ReplayBuffer(LAYOUT, capacity=8, alpha=0.6, priority_eps=1e-6)
    replay.add(make_block(4))
    sample = replay.sample(8, 0.4, np.random.default_rng(0))
    assert set(sample.position) <= {0, 1, 2, 3} and np.all(sample.weights <= 1.0)
    replay.update_priorities(sample.index[:1], sample.generation[:1], np.array([3.0]))
    assert np.isclose(replay.max_priority, 3.0 + 1e-6)
    replay.add(make_block(2, first_ref=100))
    assert replay.num_positions == 6
    leaves = replay.live_positions()[4:]
    np.testing.assert_allclose(replay.tree.get(leaves), (3.0 + 1e-6) ** 0.6)  # new data at the current max
    second = replay.positions(leaves)
    replay.update_priorities(second.index, second.generation, np.array([0.5, 0.25]))
    replay.add(make_block(4, first_ref=200))  # 6 + 4 > 8: evicts the oldest block (the one holding 3.0)
    assert replay.num_positions == 6 and sorted(replay.collected_at[replay.generation >= 0]) == [100, 200]
    assert np.isclose(replay.max_priority, 0.5 + 1e-6)  # 3.0 left the buffer with its block
    np.testing.assert_allclose(replay.tree.get(replay.live_positions()[-4:]), (0.5 + 1e-6) ** 0.6)


def test_stale_priority_updates_are_ignored():
    replay = ReplayBuffer(LAYOUT, capacity=4, alpha=1.0, priority_eps=0.0)
    replay.add(make_block(4))
    sample = replay.sample(4, 1.0, np.random.default_rng(0))
    replay.add(make_block(4, first_ref=50))  # evicts the sampled block
    assert replay.update_priorities(sample.index, sample.generation, np.full(4, 9.0)) == 0
    assert replay.max_priority == 1.0


def test_sample_order_is_shuffled():
    """The sum-tree returns leaves in ascending order; replay shuffles them (the reanalyzer re-searches a prefix)."""
    replay = ReplayBuffer(LAYOUT, capacity=400, alpha=0.6, priority_eps=1e-6)
    for i in range(100):
        replay.add(make_block(4, first_ref=10 * i))
    index = replay.sample(64, 0.4, np.random.default_rng(0)).index
    assert sorted(index.tolist()) != index.tolist()


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 4), min_size=1, max_size=120), capacity=st.integers(4, 40))
def test_capacity_counts_positions_and_evicts_oldest(lengths, capacity):
    """Episodes of random lengths 1…L (one block each): once full, more than capacity − L positions are held, never
    more than capacity, and the blocks held are exactly the newest ones."""
    replay = ReplayBuffer(LAYOUT, capacity=capacity, alpha=0.6, priority_eps=1e-6)
    for i, length in enumerate(lengths):
        replay.add(make_block(length, first_ref=1000 * i, valid=length))
        assert replay.num_positions <= capacity
        if replay.positions_added >= capacity:
            assert replay.num_positions > capacity - LAYOUT.block_length
        held = sorted(replay.collected_at[replay.generation >= 0] // 1000)
        assert held == list(range(i + 1 - len(held), i + 1))
        assert sum(lengths[j] for j in held) == replay.num_positions == len(replay.live_positions())


def naive_window(block: TrajectoryBlock, name: str, t: int, first: int, width: int) -> np.ndarray:
    """Reference: slice the block's own arrays, reading padding past `valid_steps` as 0 (frames: the last real)."""
    s = LAYOUT.frame_stack
    if name == "frame_ids":
        real = block.frame_ids[: s - 1 + min(block.valid_steps + 1, block.length + LAYOUT.lookahead)]
        index = np.minimum(s - 1 + t + first + np.arange(width), len(real) - 1)
        return real[index]
    values = getattr(block, name)
    padded = np.zeros((max(len(values), t + first + width), *values.shape[1:]), values.dtype)
    real = min(block.valid_steps, len(values))
    padded[:real] = values[:real]
    return padded[t + first : t + first + width]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_windows_match_the_blocks_they_come_from(data):
    replay = ReplayBuffer(LAYOUT, capacity=12, alpha=0.6, priority_eps=1e-6)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    blocks = {}
    for i in range(data.draw(st.integers(1, 30))):
        length = int(rng.integers(1, 5))
        valid = int(rng.integers(length, length + LAYOUT.lookahead + 1))
        block = TrajectoryBlock(rng.integers(0, 10**6, LAYOUT.frame_stack - 1 + length + LAYOUT.lookahead),
                                rng.integers(0, 3, length + 2), rng.random(length + 4).astype(np.float32),
                                rng.random((length + 2, 3)).astype(np.float32), length, valid, i)
        blocks[replay.add(block)] = block
    sample = replay.positions(replay.live_positions())
    K, n = LAYOUT.unroll_steps, LAYOUT.td_steps
    for name, first, width in [("frame_ids", -1, 2 + K + n), ("actions", 0, K), ("rewards", 0, K + n),
                               ("policies", 0, K + 1)]:
        got = replay.window(name, sample, first, width)
        for b, (slot, t) in enumerate(zip(sample.slot, sample.position, strict=True)):
            np.testing.assert_array_equal(got[b], naive_window(blocks[int(slot)], name, int(t), first, width))


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


def test_the_truncated_flag_is_kept_per_block_and_a_snapshot_without_it_loads():
    replay = ReplayBuffer(LAYOUT, 200, alpha=0.6, priority_eps=1e-6)
    cut = make_block(4, valid=3)
    cut.truncated = True
    replay.add(make_block(4))
    slot = replay.add(cut)
    assert replay.truncated[slot] and not replay.truncated[slot - 1]
    state = {k: v.copy() for k, v in replay.state_dict().items()}
    restored = ReplayBuffer(LAYOUT, 200, alpha=0.6, priority_eps=1e-6)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.truncated, replay.truncated)
    del state["truncated"]  # written before the flag existed: every episode reads as ended by the game
    restored.load_state_dict(state)
    assert not restored.truncated.any()
