"""Self-play bookkeeping (pure, no search inside): frames to the frame store, episodes cut into replay blocks.

The caller (inline loop or actor role) runs the search on `observation()`, picks actions, and hands them to
`step()` together with the search's visit distribution and root value; `step()` steps the vector env, appends the
new frames to the frame store once, and returns the trajectory blocks that became complete.

A block of an episode starting at position p covers positions p … p+L−1 plus the lookahead (K + n) that its
targets need, so it is emitted once L + K + n further transitions exist, or when the episode ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from speedy.envs.types import VecStep, VectorEnv
from speedy.obs import FrameStacker
from speedy.replay import BlockLayout, TrajectoryBlock
from speedy.replay.frames import frame_refs
from speedy.shm.frames import FrameStore


@dataclass
class EpisodeBuffer:
    """One env's current training episode. frame_refs[j + s − 1] is the observation before action j."""

    frame_refs: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    policies: list[np.ndarray] = field(default_factory=list)
    collected_at: list[int] = field(default_factory=list)
    emitted: int = 0  # positions already emitted as blocks (the next block starts here)

    def start(self, first_ref: int, frame_stack: int) -> None:
        self.frame_refs[:] = [first_ref] * frame_stack
        self.actions.clear()
        self.rewards.clear()
        self.policies.clear()
        self.collected_at.clear()
        self.emitted = 0


def random_policy(num_envs: int, num_actions: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """How actors act before training starts (as EfficientZero): actions (N,) int64 uniformly at random, and the
    uniform distribution (N, A) float32 stored as their policy target."""
    actions = rng.integers(0, num_actions, size=num_envs).astype(np.int64)
    return actions, np.full((num_envs, num_actions), 1.0 / num_actions, dtype=np.float32)


@dataclass
class SelfPlayStats:
    env_steps: int  # agent steps taken in this call (= num_envs)
    episode_returns: list[float]  # raw scores of games that ended
    episode_lengths: list[int]


class SelfPlay:
    def __init__(self, env: VectorEnv, frames: FrameStore, store_index: int, layout: BlockLayout, seed: int) -> None:
        self.env = env
        self.frames = frames
        self.store_index = store_index
        self.layout = layout
        spec = env.spec
        self.stacker = FrameStacker(env.num_envs, layout.frame_stack, spec.frame_shape, spec.frame_dtype)
        self.episodes = [EpisodeBuffer() for _ in range(env.num_envs)]
        first = env.reset(seed)
        refs = self._store(first.frames)
        self.stacker.reset(first.frames)
        for episode, ref in zip(self.episodes, refs, strict=True):
            episode.start(int(ref), layout.frame_stack)
        self.env_steps = 0

    def _store(self, frames: np.ndarray) -> np.ndarray:
        return frame_refs(self.store_index, self.frames.append(frames))

    def observation(self) -> np.ndarray:
        """Current observation stacks of all envs: (N, s·C, H, W) or (N, s·D)."""
        return self.stacker.observation()

    def step(self, actions: np.ndarray, policies: np.ndarray, global_env_steps: int) -> tuple[list[TrajectoryBlock],
                                                                                              SelfPlayStats]:
        """Act in every env. policies: (N, A) visit distributions of the searches that chose `actions` (N,)."""
        result: VecStep = self.env.step(actions)
        refs = self._store(result.frames)
        ended = result.terminated | result.truncated
        cut = result.truncated & ~result.terminated  # the time limit ended the episode, the game did not
        blocks: list[TrajectoryBlock] = []
        for i, episode in enumerate(self.episodes):
            episode.actions.append(int(actions[i]))
            episode.rewards.append(float(result.rewards[i]))
            episode.policies.append(policies[i].astype(np.float32))
            episode.collected_at.append(global_env_steps)
            if ended[i]:
                blocks += self._cut(episode, final=True, truncated=bool(cut[i]))
                episode.start(int(refs[i]), self.layout.frame_stack)
            else:
                episode.frame_refs.append(int(refs[i]))
                blocks += self._cut(episode, final=False)
        self.stacker.push(result.frames, ended)
        self.env_steps += self.env.num_envs
        done = ~np.isnan(result.episode_returns)
        stats = SelfPlayStats(
            env_steps=self.env.num_envs,
            episode_returns=result.episode_returns[done].astype(float).tolist(),
            episode_lengths=result.episode_lengths[done].astype(int).tolist(),
        )
        return blocks, stats

    def _cut(self, episode: EpisodeBuffer, final: bool, truncated: bool = False) -> list[TrajectoryBlock]:
        """Emit every block whose lookahead is complete (all remaining ones if the episode ended; `truncated`: the
        time limit ended it)."""
        L, look, s = self.layout.block_length, self.layout.lookahead, self.layout.frame_stack
        blocks = []
        while True:
            start = episode.emitted
            transitions = len(episode.actions)
            remaining = transitions - start
            if remaining <= 0 or (not final and remaining < L + look):
                break
            length = min(L, remaining)
            blocks.append(self._block(episode, start, length, truncated))
            episode.emitted += length
        self._trim(episode, s)
        return blocks

    def _block(self, episode: EpisodeBuffer, start: int, length: int, truncated: bool) -> TrajectoryBlock:
        K, n, s = self.layout.unroll_steps, self.layout.td_steps, self.layout.frame_stack
        A = self.layout.num_actions
        transitions = len(episode.actions)
        refs = episode.frame_refs[start : start + s - 1 + length + K + n]
        refs = refs + [refs[-1]] * (s - 1 + length + K + n - len(refs))
        actions = np.zeros(length + K, dtype=np.int64)
        part = episode.actions[start : start + length + K]
        actions[: len(part)] = part
        rewards = np.zeros(length + K + n, dtype=np.float32)
        part_r = episode.rewards[start : start + length + K + n]
        rewards[: len(part_r)] = part_r
        policies = np.zeros((length + K, A), dtype=np.float32)
        part_p = episode.policies[start : start + length + K]
        if part_p:
            policies[: len(part_p)] = np.stack(part_p)
        valid = min(transitions - start, length + K + n)
        return TrajectoryBlock(
            frame_ids=np.asarray(refs, dtype=np.int64),
            actions=actions,
            rewards=rewards,
            policies=policies,
            length=length,
            valid_steps=valid,
            collected_at=episode.collected_at[start],
            truncated=truncated,
        )

    @staticmethod
    def _trim(episode: EpisodeBuffer, frame_stack: int) -> None:
        """Drop positions no future block needs (keeps memory flat on long episodes)."""
        drop = episode.emitted
        if drop < 1024:
            return
        del episode.actions[:drop], episode.rewards[:drop], episode.policies[:drop], episode.collected_at[:drop]
        del episode.frame_refs[:drop]
        episode.emitted = 0
