"""Deterministic stand-in networks for MCTS tests: outputs are a function of the LeafBatch only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from speedy.mcts import ExpansionBatch, LeafBatch


class TableNet:
    """value / value_prefix / logits looked up from a fixed random table by a hash of
    (root index, parent_slot, action, depth). `levels` > 0 quantises values to that many steps
    so exact ties in Q happen often (exercising tie-breaks)."""

    def __init__(self, seed: int, num_actions: int, levels: int = 0, size: int = 251) -> None:
        rng = np.random.default_rng(seed)
        values = rng.uniform(-1.0, 1.0, size=(2, size))
        if levels > 0:
            values = np.round(values * levels) / levels
        self.value = values[0].astype(np.float32)
        self.value_prefix = values[1].astype(np.float32)
        self.logits = rng.normal(size=(size, num_actions)).astype(np.float32)
        self.size = size
        self.leaves: list[LeafBatch] = []

    def __call__(self, leaf: LeafBatch) -> ExpansionBatch:
        self.leaves.append(
            LeafBatch(leaf.slot, leaf.parent_slot.copy(), leaf.action.copy(), leaf.depth.copy(),
                      leaf.reset_hidden.copy())
        )
        roots = np.arange(len(leaf.action))
        key = (roots * 131 + leaf.parent_slot * 31 + leaf.action * 7 + leaf.depth * 3) % self.size
        return ExpansionBatch(self.value[key], self.value_prefix[key], self.logits[key])


def by_action(values: list[float], prefixes: list[float], num_actions: int) -> Callable[[LeafBatch], ExpansionBatch]:
    """Leaf value and prefix chosen by the action into the leaf; uniform logits. Records leaves."""
    v = np.asarray(values, np.float32)
    p = np.asarray(prefixes, np.float32)

    def fn(leaf: LeafBatch) -> ExpansionBatch:
        fn.actions.append(leaf.action.copy())
        batch = len(leaf.action)
        return ExpansionBatch(v[leaf.action], p[leaf.action], np.zeros((batch, num_actions), np.float32))

    fn.actions = []
    return fn
