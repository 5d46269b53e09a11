"""Prioritized replay of trajectory blocks (frames referenced by id) and its sum-tree."""

from speedy.replay.buffer import BlockLayout, ReplayBuffer, SampledPositions, TrajectoryBlock
from speedy.replay.sumtree import SumTree

__all__ = ["BlockLayout", "ReplayBuffer", "SampledPositions", "SumTree", "TrajectoryBlock"]
