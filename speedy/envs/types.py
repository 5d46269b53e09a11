"""Data types shared by every vector environment: the spec of a task and the result of one step.

Frames are returned one at a time (the newest frame per env); stacking is done by whoever stores
them (replay keeps each frame once and stacks by index), so `frame_stack` in `EnvSpec` is advice
to the network and replay, not something the environment does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """Static description of a task, cheap to compute (for sizing networks and buffers).

    env_id: canonical id, "atari:<rom>" (e.g. "atari:breakout") or "gym:<id>" (e.g. "gym:CartPole-v1").
    kind: "atari" or "gym".
    frame_shape: shape of one frame: (C, H, W) channels-first for images (Atari: C = 3 RGB; gym image
        observations, e.g. MinAtar's (4, 10, 10)), (D,) for vector observations.
    frame_dtype: np.uint8 for images (the conv network divides by 255), np.float32 for vector observations.
    frame_stack: how many consecutive frames form one network input (default 4 for images, 1 for vectors).
    num_actions: size of the discrete action set (Atari: the game's minimal action set).
    action_meanings: one name per action index, e.g. ("NOOP", "FIRE", "RIGHT", "LEFT").
    """

    env_id: str
    kind: str
    frame_shape: tuple[int, ...]
    frame_dtype: np.dtype
    frame_stack: int
    num_actions: int
    action_meanings: tuple[str, ...]


@dataclass
class VecStep:
    """Result of `reset()` or `step()` for N environments (same-step autoreset).

    frames: (N, *frame_shape) newest frame per env. Where a training episode ended on this step it is
        already the first frame of the next episode (after a life loss: the frame after the loss;
        after game over or the frame cap: the first frame of a new game, after its no-op start).
    rewards: (N,) float32 reward for training (sign-clipped for Atari in train mode, else raw).
    raw_rewards: (N,) float32 unclipped game reward.
    terminated: (N,) bool, the training episode ended (includes a life loss with episodic life).
    truncated: (N,) bool, the frame cap ended the game.
    game_over: (N,) bool, the real game ended on this step (all lives lost, or the frame cap) and the
        env was reset; `episode_returns` / `episode_lengths` hold that game's score and length.
    episode_returns: (N,) float32 raw score of the game that ended on this step, NaN where none ended.
    episode_lengths: (N,) int32 agent steps of the game that ended on this step, 0 where none ended.
    """

    frames: np.ndarray
    rewards: np.ndarray
    raw_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    game_over: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


class VectorEnv(Protocol):
    """N environments stepped together; `reset` once, then `step` forever (autoreset inside)."""

    spec: EnvSpec
    num_envs: int

    def reset(self, seed: int) -> VecStep:
        """Start a new game in every env; rewards are 0 and all flags False."""
        ...

    def step(self, actions: np.ndarray) -> VecStep:
        """Apply `actions` (N,) int, one action index per env, and return the next step."""
        ...

    def close(self) -> None:
        """Release threads and emulators; the env is unusable afterwards."""
        ...


class EpisodeTracker:
    """Running raw score and length (agent steps) of the current game of each of N envs."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def reset(self) -> None:
        """Forget all running games (after a full reset)."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def update(self, raw_rewards: np.ndarray, game_over: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add one step; return (episode_returns float32 NaN-filled, episode_lengths int32) of ended games.

        raw_rewards: (N,) float, game_over: (N,) bool. Ended games restart at 0.
        """
        self.returns += raw_rewards
        self.lengths += 1
        ep_returns = np.where(game_over, self.returns, np.nan).astype(np.float32)
        ep_lengths = np.where(game_over, self.lengths, 0).astype(np.int32)
        self.returns[game_over] = 0.0
        self.lengths[game_over] = 0
        return ep_returns, ep_lengths


def reset_step(frames: np.ndarray) -> VecStep:
    """The `VecStep` returned by `reset()`: given frames (N, ...), zero rewards and all flags False."""
    n = frames.shape[0]
    return VecStep(
        frames=frames,
        rewards=np.zeros(n, np.float32),
        raw_rewards=np.zeros(n, np.float32),
        terminated=np.zeros(n, bool),
        truncated=np.zeros(n, bool),
        game_over=np.zeros(n, bool),
        episode_returns=np.full(n, np.nan, np.float32),
        episode_lengths=np.zeros(n, np.int32),
    )


def check_actions(actions: np.ndarray, num_envs: int, num_actions: int) -> np.ndarray:
    """Validate (N,) integer actions in [0, num_actions); return them as a contiguous int32 array."""
    actions = np.asarray(actions)
    if actions.shape != (num_envs,):
        raise ValueError(f"actions must have shape ({num_envs},), got {actions.shape}")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
    if num_envs and (actions.min() < 0 or actions.max() >= num_actions):
        raise ValueError(f"actions must lie in [0, {num_actions}), got min {actions.min()} max {actions.max()}")
    return np.ascontiguousarray(actions, dtype=np.int32)


def env_seeds(seed: int, num_envs: int) -> np.ndarray:
    """Distinct non-negative int32 seeds (num_envs,) for the envs of one vector env, derived from `seed`.

    Unlike seed, seed+1, ... (which makes two vector envs seeded 0 and 1 share N-1 envs), the seeds of
    different `seed` values are independent streams.
    """
    state = np.random.SeedSequence(seed).generate_state(num_envs, dtype=np.uint32)
    return (state & 0x7FFFFFFF).astype(np.int64)
