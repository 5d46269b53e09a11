"""Evaluation: greedy MCTS (argmax of visit counts, no noise) on the evaluation protocol; raw scores and HNS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedy.envs.scores import human_normalized_score
from speedy.envs.types import VectorEnv
from speedy.mcts import greedy_actions
from speedy.obs import FrameStacker
from speedy.search import ModelSearch


@dataclass
class EvalResult:
    episodes: int
    mean_return: float
    std_return: float
    min_return: float
    max_return: float
    mean_length: float
    returns: list[float]
    human_normalized: float | None  # mean HNS for Atari games with reference scores


def evaluate(env: VectorEnv, search: ModelSearch, episodes: int, seed: int) -> EvalResult:
    """Play `episodes` complete games with N = env.num_envs games in parallel (envs stop being counted once the
    requested number of games has started, so the result is not biased towards short games)."""
    spec = env.spec
    stacker = FrameStacker(env.num_envs, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
    stacker.reset(env.reset(seed).frames)
    search.model.eval()
    counted = np.ones(env.num_envs, dtype=bool)  # this env's current game is one of the requested ones
    counted[episodes:] = False
    started = min(env.num_envs, episodes)
    returns: list[float] = []
    lengths: list[int] = []
    step = 0
    while len(returns) < episodes:
        out = search.run(stacker.observation(), None, seed=seed + step)
        result = env.step(greedy_actions(out.visit_counts))
        step += 1
        over = result.game_over
        for i in np.flatnonzero(over):
            if counted[i]:
                returns.append(float(result.episode_returns[i]))
                lengths.append(int(result.episode_lengths[i]))
            counted[i] = started < episodes
            started += int(counted[i])
        stacker.push(result.frames, result.terminated | result.truncated)
    scores = np.asarray(returns[:episodes])
    hns = None
    if spec.kind == "atari":
        game = spec.env_id.split(":", 1)[1]
        try:
            hns = float(np.mean([human_normalized_score(game, s) for s in scores]))
        except (KeyError, ValueError):
            hns = None
    return EvalResult(
        episodes=len(scores),
        mean_return=float(scores.mean()),
        std_return=float(scores.std()),
        min_return=float(scores.min()),
        max_return=float(scores.max()),
        mean_length=float(np.mean(lengths[:episodes])),
        returns=scores.tolist(),
        human_normalized=hns,
    )
