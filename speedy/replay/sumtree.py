"""Vectorised sum-tree for prioritized sampling: O(log N) numpy operations per batch, not per item."""

from __future__ import annotations

import numpy as np


class SumTree:
    """Binary tree over `capacity` leaves; each internal node holds the sum of its children (float64).

    Leaves are addressed by index in [0, capacity). `sample` draws stratified proportional samples.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.leaf_base = 1 << max(0, int(np.ceil(np.log2(capacity))))
        self.nodes = np.zeros(2 * self.leaf_base, dtype=np.float64)  # node 1 is the root; leaves from leaf_base

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Leaf values at `indices` (n,) → (n,) float64."""
        return self.nodes[self.leaf_base + np.asarray(indices, dtype=np.int64)]

    def max_leaf(self) -> float:
        return float(self.nodes[self.leaf_base : self.leaf_base + self.capacity].max())

    def set(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set leaves (n,) to values (n,) ≥ 0 and refresh the sums above them (duplicates: last one wins)."""
        indices = np.asarray(indices, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if indices.size == 0:
            return
        if np.any(indices < 0) or np.any(indices >= self.capacity):
            raise IndexError(f"SumTree index out of range [0, {self.capacity})")
        if np.any(~np.isfinite(values)) or np.any(values < 0):
            raise ValueError("SumTree values must be finite and >= 0")
        nodes = self.leaf_base + indices
        self.nodes[nodes] = values
        nodes = np.unique(nodes >> 1)
        while nodes[0] >= 1:
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes >> 1)

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative-sum interval contains each target in [0, total) → (n,) int64."""
        nodes = np.ones(len(targets), dtype=np.int64)
        remaining = np.asarray(targets, dtype=np.float64).copy()
        while nodes[0] < self.leaf_base:
            left = 2 * nodes
            left_sum = self.nodes[left]
            go_right = remaining >= left_sum
            remaining = np.where(go_right, remaining - left_sum, remaining)
            nodes = np.where(go_right, left + 1, left)
        leaves = nodes - self.leaf_base
        return np.minimum(leaves, self.capacity - 1)

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Stratified proportional sample: one draw in each of `batch_size` equal slices of the total mass."""
        total = self.total
        if total <= 0:
            raise ValueError("cannot sample from an empty SumTree (total priority is 0)")
        edges = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        leaves = self.find(np.minimum(edges, np.nextafter(total, 0)))
        # Float round-off can land on a zero-priority leaf next to a positive one: resample those uniformly
        # among positive leaves' mass (rare; keeps the contract that sampled leaves have priority > 0).
        bad = self.get(leaves) <= 0
        while np.any(bad):
            leaves[bad] = self.find(rng.random(int(bad.sum())) * total)
            bad = self.get(leaves) <= 0
        return leaves
