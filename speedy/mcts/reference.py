"""Reference MCTS: the test oracle for the fast engine in `speedy.mcts.engine`.

Written for obviousness, not speed: one small Python object per node, plain float arithmetic,
a loop over roots. It is NOT meant to be fast or to be used by roles; roles use
`speedy.mcts.run_search` (the numba engine), which the tests check against this module.

The rules are EfficientZero's released ctree (see DESIGN.md §3) with running min-max bounds:
- roots: priors softmax(logits) (optionally mixed with noise), visit count 1, value sum 0;
- selection: pUCT score with min-max normalised Q, unvisited children score the node's mean Q,
  ties within 1e-6 broken with `speedy.mcts.rng.draw_below`;
- expansion: the leaf gets priors softmax(logits), its value prefix, is_reset = depth % H == 0;
- backup: G = leaf value; each node on the path (leaf to root) adds G, bumps its visit count,
  adds its Q to the root's min-max bounds, then G = r + discount * G.

Numerics (shared with the engine so both choose identically): statistics are Python floats
(float64); priors are rounded to float32 once, at expansion, as the engine stores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from speedy.mcts.rng import draw_below, seed_states
from speedy.mcts.types import (
    ExpansionBatch,
    LeafBatch,
    RootBatch,
    SearchConfig,
    SearchResult,
    check_expansion,
    check_roots,
)

TIE_EPSILON = 1e-6


@dataclass(eq=False)
class Node:
    """One tree node. `children` is empty until the node is expanded; `action` leads here from the parent."""

    prior: float
    action: int = -1
    slot: int = -1
    depth: int = 0
    visit_count: int = 0
    value_sum: float = 0.0
    value_prefix: float = 0.0
    is_reset: bool = False
    children: list[Node] = field(default_factory=list)

    @property
    def expanded(self) -> bool:
        return len(self.children) > 0

    def value(self) -> float:
        return self.value_sum / self.visit_count if self.visit_count > 0 else 0.0


@dataclass
class MinMax:
    """Running bounds of the Q values seen in one root's backups."""

    minimum: float = math.inf
    maximum: float = -math.inf

    def update(self, q: float) -> None:
        if q > self.maximum:
            self.maximum = q
        if q < self.minimum:
            self.minimum = q

    def normalize(self, q: float, value_delta_max: float) -> float:
        delta = self.maximum - self.minimum
        if delta > 0.0:
            return (q - self.minimum) / max(delta, value_delta_max)
        return q


def softmax_priors(logits: np.ndarray) -> list[float]:
    """Max-subtracted softmax of one row of float32 logits, in float64, as Python floats."""
    values = [float(x) for x in logits]
    top = max(values)
    exps = [math.exp(x - top) for x in values]
    total = 0.0
    for e in exps:
        total += e
    return [e / total for e in exps]


def expand(node: Node, value_prefix: float, logits: np.ndarray, noise: np.ndarray | None, fraction: float) -> None:
    """Give `node` its value prefix and one child per action with prior softmax(logits) (+ noise)."""
    priors = softmax_priors(logits)
    if noise is not None:
        priors = [p * (1.0 - fraction) + float(n) * fraction for p, n in zip(priors, noise, strict=True)]
    node.value_prefix = float(value_prefix)
    node.children = [Node(prior=float(np.float32(p)), action=a, depth=node.depth + 1) for a, p in enumerate(priors)]


def reward(child: Node, parent: Node) -> float:
    """Value-prefix difference r of the edge parent -> child (the child's prefix alone after a reset)."""
    return child.value_prefix if parent.is_reset else child.value_prefix - parent.value_prefix


def child_q(child: Node, parent: Node, discount: float) -> float:
    return reward(child, parent) + discount * child.value()


def mean_q(node: Node, is_root: bool, parent_mean_q: float, discount: float) -> float:
    """Mean Q of the visited children; below the root the parent's mean Q counts as one more term."""
    total = 0.0
    visited = 0
    for child in node.children:
        if child.visit_count > 0:
            total += child_q(child, node, discount)
            visited += 1
    if is_root and visited > 0:
        return total / visited
    return (parent_mean_q + total) / (visited + 1)


def ucb_scores(node: Node, node_mean_q: float, bounds: MinMax, config: SearchConfig) -> list[float]:
    """pUCT score of every child of `node` (prior term + clipped normalised Q)."""
    n = node.visit_count - 1
    pb_c = math.log((n + config.pb_c_base + 1.0) / config.pb_c_base) + config.pb_c_init
    sqrt_n = math.sqrt(n)
    scores = []
    for child in node.children:
        prior_score = pb_c * (sqrt_n / (child.visit_count + 1)) * child.prior
        q = child_q(child, node, config.discount) if child.visit_count > 0 else node_mean_q
        value_score = min(max(bounds.normalize(q, config.value_delta_max), 0.0), 1.0)
        scores.append(prior_score + value_score)
    return scores


def pick_best(scores: list[float], state: np.ndarray, root: int) -> int:
    """Index of the best score; near-ties (within 1e-6 of the running max) drawn uniformly."""
    best = -math.inf
    candidates: list[int] = []
    for a, score in enumerate(scores):
        if score > best:
            best = score
            candidates = [a]
        elif score >= best - TIE_EPSILON:
            candidates.append(a)
    if len(candidates) == 1:
        return candidates[0]
    return candidates[draw_below(state, root, len(candidates))]


def select_path(root: Node, bounds: MinMax, config: SearchConfig, state: np.ndarray, b: int) -> list[Node]:
    """Descend from the root while nodes are expanded; return the path root..leaf."""
    path = [root]
    node = root
    parent_mean_q = 0.0
    is_root = True
    while node.expanded:
        node_mean_q = mean_q(node, is_root, parent_mean_q, config.discount)
        is_root = False
        parent_mean_q = node_mean_q
        action = pick_best(ucb_scores(node, node_mean_q, bounds, config), state, b)
        node = node.children[action]
        path.append(node)
    return path


def backup(path: list[Node], value: float, bounds: MinMax, discount: float) -> None:
    """Propagate the leaf value from the leaf to the root, updating the min-max bounds."""
    g = value
    for i in range(len(path) - 1, -1, -1):
        node = path[i]
        node.value_sum += g
        node.visit_count += 1
        r = reward(node, path[i - 1]) if i > 0 else node.value_prefix
        bounds.update(r + discount * node.value())
        g = r + discount * g


def run_search(
    roots: RootBatch,
    recurrent_fn: Callable[[LeafBatch], ExpansionBatch],
    config: SearchConfig,
    seed: int,
) -> SearchResult:
    """Run `config.num_simulations` simulations for every root; see the module docstring for the rules."""
    batch, actions = check_roots(roots)
    state = seed_states(seed, batch)
    trees = []
    for b in range(batch):
        root = Node(prior=1.0, slot=0)
        noise = None if roots.noise is None else roots.noise[b]
        fraction = config.exploration_fraction if roots.noise_fraction is None else float(roots.noise_fraction[b])
        expand(root, roots.value_prefix[b], roots.policy_logits[b], noise, fraction)
        root.visit_count = 1
        trees.append(root)
    bounds = [MinMax() for _ in range(batch)]
    for k in range(config.num_simulations):
        paths = [select_path(trees[b], bounds[b], config, state, b) for b in range(batch)]
        leaf = _leaf_batch(paths, k + 1, config.lstm_horizon)
        out = recurrent_fn(leaf)
        check_expansion(out, batch, actions)
        for b, path in enumerate(paths):
            node = path[-1]
            node.slot = k + 1
            expand(node, out.value_prefix[b], out.policy_logits[b], None, 0.0)
            node.is_reset = bool(leaf.reset_hidden[b])
            backup(path, float(out.value[b]), bounds[b], config.discount)
    return _result(trees, config.discount, actions)


def _leaf_batch(paths: list[list[Node]], slot: int, horizon: int) -> LeafBatch:
    parent_slot = np.array([p[-2].slot for p in paths], dtype=np.int32)
    action = np.array([p[-1].action for p in paths], dtype=np.int32)
    depth = np.array([p[-1].depth for p in paths], dtype=np.int32)
    reset = (depth % horizon == 0) if horizon > 0 else np.zeros(len(paths), dtype=bool)
    return LeafBatch(slot=slot, parent_slot=parent_slot, action=action, depth=depth, reset_hidden=reset)


def _result(trees: list[Node], discount: float, actions: int) -> SearchResult:
    visits = np.zeros((len(trees), actions), dtype=np.int32)
    q = np.zeros((len(trees), actions), dtype=np.float32)
    for b, root in enumerate(trees):
        for a, child in enumerate(root.children):
            visits[b, a] = child.visit_count
            if child.visit_count > 0:
                q[b, a] = child_q(child, root, discount)
    values = np.array([root.value() for root in trees], dtype=np.float32)
    return SearchResult(visit_counts=visits, root_value=values, root_q=q)
