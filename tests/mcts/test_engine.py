"""Searcher lifecycle, reuse, interleaving, input checks and the compile cache report."""

from __future__ import annotations

import numpy as np
import pytest

from speedy.mcts import ExpansionBatch, RootBatch, SearchConfig, Searcher, compile_info, run_search
from tests.mcts.standin import TableNet

CONFIG = SearchConfig(num_simulations=12)


def make_roots(batch: int, actions: int, seed: int) -> RootBatch:
    rng = np.random.default_rng(seed)
    return RootBatch(np.zeros(batch, np.float32), rng.normal(size=(batch, actions)).astype(np.float32), None)


def finish(searcher: Searcher, net: TableNet):
    while not searcher.done:
        searcher.expand_and_backup(net(searcher.select()))
    return searcher.result()


def test_searcher_reuse_and_interleaving_match_fresh_searches() -> None:
    roots_x, roots_y = make_roots(3, 4, 0), make_roots(3, 4, 1)
    want_x = run_search(roots_x, TableNet(0, 4), CONFIG, seed=5)
    want_y = run_search(roots_y, TableNet(1, 4), CONFIG, seed=6)
    sx, sy = Searcher(3, 4, CONFIG), Searcher(3, 4, CONFIG)
    net_x, net_y = TableNet(0, 4), TableNet(1, 4)
    sx.begin(roots_x, 5)
    sy.begin(roots_y, 6)
    while not sx.done:  # two searches in flight, steps interleaved
        leaf_x = sx.select()
        leaf_y = sy.select()
        sx.expand_and_backup(net_x(leaf_x))
        sy.expand_and_backup(net_y(leaf_y))
    np.testing.assert_array_equal(sx.result().visit_counts, want_x.visit_counts)
    np.testing.assert_array_equal(sy.result().visit_counts, want_y.visit_counts)
    sx.begin(roots_y, 6)  # reuse for another search
    again = finish(sx, TableNet(1, 4))
    np.testing.assert_array_equal(again.visit_counts, want_y.visit_counts)
    np.testing.assert_array_equal(again.root_value, want_y.root_value)


def test_lifecycle_errors_name_the_problem() -> None:
    searcher = Searcher(2, 3, CONFIG)
    with pytest.raises(RuntimeError, match="begin"):
        searcher.select()
    searcher.begin(make_roots(2, 3, 0), 0)
    searcher.select()
    with pytest.raises(RuntimeError, match="twice"):
        searcher.select()
    with pytest.raises(RuntimeError, match="not|before"):
        Searcher(2, 3, CONFIG).result()


def test_bad_shapes_raise_value_errors() -> None:
    searcher = Searcher(2, 3, CONFIG)
    with pytest.raises(ValueError, match="built for"):
        searcher.begin(make_roots(2, 4, 0), 0)
    with pytest.raises(ValueError, match="value_prefix"):
        searcher.begin(RootBatch(np.zeros(3, np.float32), np.zeros((2, 3), np.float32), None), 0)
    with pytest.raises(ValueError, match="noise"):
        searcher.begin(RootBatch(np.zeros(2, np.float32), np.zeros((2, 3), np.float32), np.ones((2, 2))), 0)
    with pytest.raises(ValueError, match="noise_fraction"):
        searcher.begin(RootBatch(np.zeros(2, np.float32), np.zeros((2, 3), np.float32), None, np.ones(3)), 0)
    with pytest.raises(ValueError, match="noise_fraction"):
        searcher.begin(RootBatch(np.zeros(2, np.float32), np.zeros((2, 3), np.float32), None, np.full(2, 1.5)), 0)
    searcher.begin(make_roots(2, 3, 0), 0)
    searcher.select()
    bad = ExpansionBatch(np.zeros(2, np.float32), np.zeros(2, np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="policy_logits"):
        searcher.expand_and_backup(bad)
    with pytest.raises(ValueError, match="num_simulations"):
        SearchConfig(num_simulations=0)


def test_leaf_slots_count_up_and_parents_exist() -> None:
    searcher = Searcher(4, 3, CONFIG)
    searcher.begin(make_roots(4, 3, 2), 1)
    net = TableNet(3, 3)
    for k in range(CONFIG.num_simulations):
        leaf = searcher.select()
        assert leaf.slot == k + 1
        assert (leaf.parent_slot >= 0).all() and (leaf.parent_slot <= k).all()
        assert (leaf.depth >= 1).all() and (leaf.depth <= k + 1).all()
        np.testing.assert_array_equal(leaf.reset_hidden, leaf.depth % 5 == 0)
        searcher.expand_and_backup(net(leaf))
    assert searcher.done


def test_compile_info_reports_cache() -> None:
    info = compile_info()
    assert set(info) >= {"compile_seconds", "cache_hit", "cache_hits", "cache_misses", "cache_dir"}
    assert info["compile_seconds"] >= 0.0
    assert info["cache_hits"] + info["cache_misses"] >= 4
