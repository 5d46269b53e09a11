"""Prioritized replay of trajectory blocks whose frames live elsewhere (a frame store) and are referenced by id.

An actor cuts each episode into blocks of up to `block_length` positions. A block also carries the *lookahead*
the targets of its last position need (unroll K actions and policies, K + n rewards and frame ids), so sampling a
position never needs a second block. Frames are never copied into the buffer: `frame_ids` index a frame store,
and an observation stack at position t is the `stack` ids ending at t.

Layout of one block with L = length, K = unroll steps, n = max TD steps, s = frame stack, A = actions:
    frame_ids     (s − 1 + L + K + n,) int64  ids of observations −(s−1) … L+K+n−1 (history before an episode
                                              start repeats its first frame; entries past the end repeat the last)
    actions       (L + K,)        int64       action taken at each position (0 past the end)
    rewards       (L + K + n,)    float32     reward after the action at each position (0 past the end)
    policies      (L + K, A)      float32     self-play visit distribution (0 past the end)
    valid_steps   int             real transitions available from position 0 (≤ L + K + n); position j is a real
                                              state if j < valid_steps, or the final state if j == valid_steps
    collected_at  int             env steps collected in the whole run when the block's first position was played
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedy.replay.sumtree import SumTree


@dataclass
class TrajectoryBlock:
    frame_ids: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    policies: np.ndarray
    length: int
    valid_steps: int
    collected_at: int


@dataclass(frozen=True)
class BlockLayout:
    block_length: int  # L
    unroll_steps: int  # K
    td_steps: int  # n (maximum)
    frame_stack: int  # s
    num_actions: int  # A

    @property
    def lookahead(self) -> int:
        return self.unroll_steps + self.td_steps

    @property
    def frames_per_block(self) -> int:
        return self.frame_stack - 1 + self.block_length + self.lookahead

    def check(self, block: TrajectoryBlock) -> None:
        """Raise ValueError naming the field if `block` does not fit this layout."""
        L, K, n = self.block_length, self.unroll_steps, self.td_steps
        if not 1 <= block.length <= L:
            raise ValueError(f"block length {block.length} outside [1, {L}]")
        expected = {
            "frame_ids": (self.frame_stack - 1 + block.length + K + n,),
            "actions": (block.length + K,),
            "rewards": (block.length + K + n,),
            "policies": (block.length + K, self.num_actions),
        }
        for name, shape in expected.items():
            actual = np.shape(getattr(block, name))
            if actual != shape:
                raise ValueError(f"block field {name} has shape {actual}, expected {shape}")
        if not 1 <= block.valid_steps <= block.length + K + n:
            raise ValueError(f"block valid_steps {block.valid_steps} outside [1, {block.length + K + n}]")


@dataclass
class SampledPositions:
    """A prioritized sample: `index` = slot · L + t identifies a position; `generation` detects overwrites."""

    index: np.ndarray  # (B,) int64
    slot: np.ndarray  # (B,) int64 block slot
    position: np.ndarray  # (B,) int64 position t within the block
    generation: np.ndarray  # (B,) int64 generation of the slot when sampled
    weights: np.ndarray  # (B,) float32 importance-sampling weights, max 1


class ReplayBuffer:
    """Ring of `capacity // block_length` block slots (oldest evicted first) with a sum-tree over positions."""

    def __init__(self, layout: BlockLayout, capacity: int, alpha: float, priority_eps: float) -> None:
        self.layout = layout
        self.alpha = alpha
        self.priority_eps = priority_eps
        self.num_slots = max(1, capacity // layout.block_length)
        L, look, A = layout.block_length, layout.lookahead, layout.num_actions
        K = layout.unroll_steps
        self.frame_ids = np.zeros((self.num_slots, layout.frames_per_block), dtype=np.int64)
        self.actions = np.zeros((self.num_slots, L + K), dtype=np.int64)
        self.rewards = np.zeros((self.num_slots, L + look), dtype=np.float32)
        self.policies = np.zeros((self.num_slots, L + K, A), dtype=np.float32)
        self.lengths = np.zeros(self.num_slots, dtype=np.int64)
        self.valid_steps = np.zeros(self.num_slots, dtype=np.int64)
        self.collected_at = np.zeros(self.num_slots, dtype=np.int64)
        self.generation = np.zeros(self.num_slots, dtype=np.int64)  # blocks ever written into the slot
        self.tree = SumTree(self.num_slots * L)
        self.max_priority = 1.0
        self.blocks_added = 0
        self.positions_added = 0

    @property
    def num_positions(self) -> int:
        return int(self.lengths.sum())

    def add(self, block: TrajectoryBlock, priorities: np.ndarray | None = None) -> int:
        """Store `block` in the next slot (evicting the oldest); new positions get the max priority seen so far
        unless `priorities` (length,) are given. Returns the slot."""
        self.layout.check(block)
        slot = self.blocks_added % self.num_slots
        L = self.layout.block_length
        n_frames = block.frame_ids.shape[0]
        self.frame_ids[slot, :n_frames] = block.frame_ids
        self.frame_ids[slot, n_frames:] = block.frame_ids[-1]
        self._put(self.actions, slot, block.actions)
        self._put(self.rewards, slot, block.rewards)
        self._put(self.policies, slot, block.policies)
        self.lengths[slot] = block.length
        self.valid_steps[slot] = block.valid_steps
        self.collected_at[slot] = block.collected_at
        self.generation[slot] += 1
        leaf_priority = np.zeros(L)
        if priorities is None:
            leaf_priority[: block.length] = self.max_priority**self.alpha
        else:
            leaf_priority[: block.length] = (np.asarray(priorities, dtype=np.float64) + self.priority_eps) ** self.alpha
        self.tree.set(np.arange(slot * L, (slot + 1) * L), leaf_priority)
        self.blocks_added += 1
        self.positions_added += block.length
        return slot

    @staticmethod
    def _put(array: np.ndarray, slot: int, values: np.ndarray) -> None:
        array[slot, : len(values)] = values
        array[slot, len(values) :] = 0

    def sample(self, batch_size: int, beta: float, rng: np.random.Generator) -> SampledPositions:
        """Proportional sample with importance weights (N·P(i))^−β normalised by the batch max."""
        index = self.tree.sample(batch_size, rng)
        probs = self.tree.get(index) / self.tree.total
        weights = (self.num_positions * probs) ** (-beta)
        weights = (weights / weights.max()).astype(np.float32)
        slot, position = np.divmod(index, self.layout.block_length)
        return SampledPositions(index, slot, position, self.generation[slot].copy(), weights)

    def update_priorities(self, index: np.ndarray, generation: np.ndarray, priorities: np.ndarray) -> int:
        """Set new priorities (|error| + ε) for positions still holding the sampled block. Returns how many applied."""
        index = np.asarray(index, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        if index.shape != priorities.shape:
            raise ValueError(f"index shape {index.shape} != priorities shape {priorities.shape}")
        slot = index // self.layout.block_length
        current = self.generation[slot] == np.asarray(generation)
        live = current & ((index % self.layout.block_length) < self.lengths[slot])
        if not np.any(live):
            return 0
        values = priorities[live] + self.priority_eps
        self.max_priority = max(self.max_priority, float(values.max()))
        self.tree.set(index[live], values**self.alpha)
        return int(live.sum())
