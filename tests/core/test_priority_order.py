"""Priority updates are ordered by the training step of the weights behind them: a refresher's late answer from
old weights never overwrites a newer priority (issue 10)."""

from __future__ import annotations

import numpy as np

from speedy.replay import ReplayBuffer

from .test_replay import LAYOUT, make_block


def test_a_stale_priority_never_overwrites_a_newer_one():
    replay = ReplayBuffer(LAYOUT, 16, 1.0, 0.0)
    replay.add(make_block(4))
    index = np.arange(4)
    generation = replay.generation[replay.owner[index]]
    assert replay.update_priorities(index, generation, np.full(4, 2.0), version=10) == 4  # trainer at step 10
    assert replay.update_priorities(index[:2], generation[:2], np.full(2, 9.0), version=7) == 0  # refresher, old
    assert replay.priorities[:4].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert replay.update_priorities(index[:2], generation[:2], np.full(2, 5.0), version=10) == 2  # same step
    assert replay.update_priorities(index[2:], generation[2:], np.full(2, 1.0), version=12) == 2  # newer
    assert replay.priorities[:4].tolist() == [5.0, 5.0, 1.0, 1.0]
    assert replay.tree.total == 12.0  # α = 1: the sum-tree follows exactly the applied values
    replay.add(make_block(4, first_ref=100))  # new data: any update applies to it
    new = np.arange(4, 8)
    assert replay.update_priorities(new, replay.generation[replay.owner[new]], np.ones(4), version=0) == 4
