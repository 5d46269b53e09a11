"""Hand-checked trees: both the reference and the engine must reproduce the arithmetic in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speedy.mcts import ExpansionBatch, LeafBatch, RootBatch, SearchConfig
from speedy.mcts import reference as ref
from speedy.mcts import run_search as engine_search
from speedy.mcts.rng import draw_below, seed_states
from tests.mcts.standin import by_action

IMPLS = {"reference": ref.run_search, "engine": engine_search}


def roots(logits: list[list[float]], value_prefix: float = 0.0) -> RootBatch:
    logits_arr = np.asarray(logits, np.float32)
    return RootBatch(np.full(len(logits), value_prefix, np.float32), logits_arr, None)


def expected_tie_action(seed: int, num_candidates: int) -> int:
    return draw_below(seed_states(seed, 1), 0, num_candidates)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", range(6))
def test_first_selection_is_a_tie_broken_by_the_seeded_rng(impl: str, seed: int) -> None:
    # Root visit count 1 -> N = 0 -> sqrt(N) = 0: both prior terms are 0. No child visited -> root
    # mean Q = 0, bounds empty -> norm(0) = 0. Scores (0, 0): a tie, drawn from stream 0 of the seed.
    # Leaf: value 1, prefix 0.5, discount 0.5. Backup: leaf sum 1, r = 0.5; G = 0.5 + 0.5 * 1 = 1.0;
    # root sum 1.0, visits 2 -> root value 0.5; Q(chosen child) = 0.5 + 0.5 * 1 / 1 = 1.0.
    fn = by_action([1.0, 1.0], [0.5, 0.5], 2)
    result = IMPLS[impl](roots([[0.0, 3.0]]), fn, SearchConfig(num_simulations=1, discount=0.5), seed)
    chosen = expected_tie_action(seed, 2)
    assert fn.actions[0][0] == chosen
    assert result.visit_counts.tolist() == [[1 - chosen, chosen]]
    np.testing.assert_allclose(result.root_value, [0.5])
    expected_q = [0.0, 0.0]
    expected_q[chosen] = 1.0
    np.testing.assert_allclose(result.root_q, [expected_q])


def test_seeds_reach_both_tie_outcomes() -> None:
    assert {expected_tie_action(seed, 2) for seed in range(32)} == {0, 1}


@pytest.mark.parametrize("impl", IMPLS)
def test_reset_at_depth_five_in_a_chain(impl: str) -> None:
    # One action -> a chain: simulation k creates the node at depth k (slot k, parent slot k - 1).
    # Values 0, discount 1, prefixes 1, 2, 3, 4, 5 at depths 1..5 and 1 at depth 6 (the LSTM restarts
    # after the reset at depth 5). Rewards: r_d = prefix_d - prefix_{d-1} = 1 for d <= 5, and
    # r_6 = prefix_6 alone = 1 because its parent (depth 5) is reset (without the rule: 1 - 5 = -4).
    # Simulation k backs up sum_{d<=k} r_d = k into the root: root sum 1+2+...+6 = 21, visits 7 -> 3.0.
    # Child at depth 1 gets k - 1: sum 0+1+...+5 = 15 over 6 visits = 2.5; Q = r_1 + 2.5 = 3.5.
    prefix_by_depth = np.array([0, 1, 2, 3, 4, 5, 1], np.float32)
    seen: list[LeafBatch] = []

    def fn(leaf: LeafBatch) -> ExpansionBatch:
        seen.append(LeafBatch(leaf.slot, leaf.parent_slot.copy(), leaf.action.copy(), leaf.depth.copy(),
                              leaf.reset_hidden.copy()))
        return ExpansionBatch(np.zeros(1, np.float32), prefix_by_depth[leaf.depth],
                              np.zeros((1, 1), np.float32))

    config = SearchConfig(num_simulations=6, discount=1.0)
    result = IMPLS[impl](roots([[0.0]]), fn, config, seed=0)
    assert [leaf.depth[0] for leaf in seen] == [1, 2, 3, 4, 5, 6]
    assert [leaf.parent_slot[0] for leaf in seen] == [0, 1, 2, 3, 4, 5]
    assert [leaf.slot for leaf in seen] == [1, 2, 3, 4, 5, 6]
    assert [bool(leaf.reset_hidden[0]) for leaf in seen] == [False, False, False, False, True, False]
    np.testing.assert_allclose(result.root_value, [3.0])
    np.testing.assert_allclose(result.root_q, [[3.5]])
    assert result.visit_counts.tolist() == [[6]]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("delta_floor", "third_action"), [(0.01, 1), (1e-6, 0)])
def test_min_max_floor(impl: str, delta_floor: float, third_action: int) -> None:
    # Priors 0.4 / 0.6, discount 1, prefixes 0; leaf value 0.003 under action 0, 0.002 under action 1.
    # Sim 1: tie (N = 0) -> some action x. Sim 2: the other one (prior term 1.25 * 1 * p beats
    # 1.25 * 0.5 * p', both value terms equal since the root's mean Q is Q(x)).
    # Bounds after two backups (either order): leaf Qs 0.003, 0.002; root Qs 0.0015 or 0.001 then
    # 0.005 / 3 -> max 0.003, min 0.0015 (x = 0) or 0.001 (x = 1): delta 0.0015 or 0.002.
    # Sim 3 at the root: N = 2, c = (log(19655 / 19652) + 1.25) * sqrt(2) / 2 = 0.88399:
    #   prior terms 0.4c = 0.35360 (action 0), 0.6c = 0.53040 (action 1); gap 0.1768 for action 1.
    #   floor 0.01: value terms differ by (0.003 - 0.002) / 0.01 = 0.1 < 0.1768 -> action 1.
    #   floor 1e-6: they differ by 0.001 / delta >= 0.5 > 0.1768 -> action 0.
    # Root visits after sim 3: [1, 2] with the floor, [2, 1] without.
    fn = by_action([0.003, 0.002], [0.0, 0.0], 2)
    config = SearchConfig(num_simulations=3, discount=1.0, value_delta_max=delta_floor)
    result = IMPLS[impl](roots([[math.log(0.4), math.log(0.6)]]), fn, config, seed=3)
    assert sorted([fn.actions[0][0], fn.actions[1][0]]) == [0, 1]
    # the third leaf hangs below the root child chosen at sim 3, so the root visits tell which one
    expected = [1, 2] if third_action == 1 else [2, 1]
    assert result.visit_counts.tolist() == [expected]


def _node(prior: float, visits: int = 0, value_sum: float = 0.0, prefix: float = 0.0) -> ref.Node:
    return ref.Node(prior=prior, visit_count=visits, value_sum=value_sum, value_prefix=prefix)


def test_mean_q_for_unvisited_children() -> None:
    # Node with prefix 0.5, not reset; children: visited (prefix 1.5, 2 visits, sum 4) and unvisited.
    # Q(visited) = (1.5 - 0.5) + 0.5 * 4 / 2 = 2.0.
    node = _node(1.0, visits=3, prefix=0.5)
    node.children = [_node(0.5, visits=2, value_sum=4.0, prefix=1.5), _node(0.5)]
    # At a root: mean over visited children only = 2.0.
    assert ref.mean_q(node, True, 7.0, 0.5) == pytest.approx(2.0)
    # Below the root: (parent mean Q 1.0 + 2.0) / (1 visited + 1) = 1.5.
    assert ref.mean_q(node, False, 1.0, 0.5) == pytest.approx(1.5)
    # After a reset the child's prefix alone is its reward: Q = 1.5 + 0.5 * 2 = 2.5; (1.0 + 2.5) / 2 = 1.75.
    node.is_reset = True
    assert ref.mean_q(node, False, 1.0, 0.5) == pytest.approx(1.75)
    # A root with no visited child has mean Q 0; elsewhere it inherits the parent's mean Q.
    fresh = _node(1.0, visits=1)
    fresh.children = [_node(0.5), _node(0.5)]
    assert ref.mean_q(fresh, True, 0.0, 0.5) == 0.0
    assert ref.mean_q(fresh, False, 0.7, 0.5) == pytest.approx(0.7)


def test_unvisited_child_scores_the_mean_q() -> None:
    # Bounds [0, 4]: the unvisited child's value term is norm(mean Q 1.5) = 1.5 / 4 = 0.375.
    # N = 2: c = (log(19655 / 19652) + 1.25) * sqrt(2) = 1.767983...; unvisited prior term 0.5c / 1.
    node = _node(1.0, visits=3, prefix=0.5)
    node.children = [_node(0.5, visits=2, value_sum=4.0, prefix=1.5), _node(0.5)]
    bounds = ref.MinMax(0.0, 4.0)
    scores = ref.ucb_scores(node, 1.5, bounds, SearchConfig(discount=0.5))
    c = (math.log(19655 / 19652) + 1.25) * math.sqrt(2)
    assert scores[1] == pytest.approx(0.5 * c + 0.375)
    # visited: prior term 0.5c / 3, value term norm(2.0) = 0.5
    assert scores[0] == pytest.approx(0.5 * c / 3 + 0.5)


def test_normalisation_floor_and_empty_bounds() -> None:
    assert ref.MinMax().normalize(0.3, 0.01) == 0.3  # max < min: unchanged
    assert ref.MinMax(0.2, 0.2).normalize(0.3, 0.01) == 0.3  # max == min: unchanged
    assert ref.MinMax(0.0, 0.004).normalize(0.002, 0.01) == pytest.approx(0.2)  # floor 0.01
    assert ref.MinMax(0.0, 4.0).normalize(3.0, 0.01) == pytest.approx(0.75)


def test_tie_window_is_one_millionth_of_the_running_max() -> None:
    state = seed_states(0, 1)
    assert ref.pick_best([0.5, 1.0 + 2e-6, 1.0], state, 0) == 1  # 2e-6 apart: no tie
    assert ref.pick_best([0.5, 1.0, 1.0 + 5e-7], state, 0) == 2  # a higher score restarts the list
    before = state.copy()
    assert ref.pick_best([0.5, 1.0], state, 0) == 1
    assert np.array_equal(state, before)  # no draw for a single candidate
    picks = {ref.pick_best([1.0, 1.0 - 5e-7, 0.0], state, 0) for _ in range(40)}
    assert picks == {0, 1}
