"""Evaluation: greedy MCTS (the search's greedy action, `mcts.greedy_action`; no noise) on the evaluation protocol;
raw scores and HNS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedy.components import env_options
from speedy.config import Config
from speedy.envs import make_vector_env
from speedy.envs.scores import human_normalized_score
from speedy.envs.types import VectorEnv
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


def make_eval_env(config: Config, episodes: int, seed: int | None = None) -> VectorEnv:
    """The evaluation protocol's environments: min(episodes, 8) games in parallel, raw score, no episodic life,
    `env.max_frames_eval` raw frames per game (108k in the protocol), the run's sticky-action setting."""
    return make_vector_env(config.env.id, min(episodes, 8), seed=config.run.seed + 10_000 if seed is None else seed,
                           mode="eval", **env_options(config))


def evaluate(env: VectorEnv, search: ModelSearch, episodes: int, seed: int,
             record: list[np.ndarray] | None = None, record_max_steps: int = 5_000) -> EvalResult:
    """Play `episodes` complete games with N = env.num_envs games in parallel (envs stop being counted once the
    requested number of games has started, so the result is not biased towards short games). Each action is the
    greedy action (`mcts.greedy_action`: by default the argmax of the visit counts) of a search without root
    noise. With `record`, env 0's frames (C, H, W) of its first game are appended to it (the first
    `record_max_steps` + 1 of them)."""
    spec = env.spec
    stacker = FrameStacker(env.num_envs, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
    first = env.reset(seed).frames
    stacker.reset(first)
    recording = record is not None
    if recording:
        record.append(first[0].copy())
    search.model.eval()
    counted = np.ones(env.num_envs, dtype=bool)  # this env's current game is one of the requested ones
    counted[episodes:] = False
    started = min(env.num_envs, episodes)
    returns: list[float] = []
    lengths: list[int] = []
    step = 0
    while len(returns) < episodes:
        out = search.run(stacker.observation(), None, seed=seed + step)
        result = env.step(out.greedy_action)
        step += 1
        over = result.game_over
        recording = recording and not over[0] and step <= record_max_steps
        if recording:
            record.append(result.frames[0].copy())
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
