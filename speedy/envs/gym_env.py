"""Gymnasium tasks with a Discrete action space and a Box observation, as a `VectorEnv`.

Two kinds of observation:
- a vector, 1-D Box (D,): frames are float32 observations, the network is the MLP body, no frame stack by default;
- an image, 3-D Box (H, W, C) of any dtype (MinAtar's 10×10×C bool, uint8 pixels, floats in bounds): frames are
  stored as uint8 (C, H, W) like Atari's and go through the conv body, which divides by 255, with a stack of 4 by
  default (`env.frame_stack`). uint8 images are stored as they are; every other dtype is mapped linearly from the
  Box's [low, high] to [0, 255] (bool: False → 0, True → 255, so the network sees 0 and 1), which needs finite bounds.

The envs are stepped in a Python loop (these tasks are cheap; CartPole-v1 is the development task).
Rewards are never clipped, and `max_frames` caps the agent steps of one game (frame skip is 1 here).

Time limits: evaluation keeps the env's registered limit (CartPole-v1: 500 steps, the benchmark's score cap),
with `max_frames` on top. Training replaces it by `max_frames` (`registered_time_limit=False`): a time limit is
not a terminal state (the state holds no clock). Targets bootstrap past a time-limit cut (speedy/targets.py), but
long training episodes also keep the rare cut out of CartPole's data. This mirrors
the Atari protocol, whose training and evaluation caps differ too. Tasks that register no limit (MinAtar) end
only by themselves or at `max_frames`, so evaluation cannot run forever.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from speedy.envs.atari import ATARI_FRAME_STACK
from speedy.envs.minatar_env import is_minatar, minatar_action_meanings, register_minatar
from speedy.envs.types import EnvSpec, EpisodeTracker, VecStep, check_actions, env_seeds, reset_step

IMAGE_FRAME_STACK = ATARI_FRAME_STACK  # default stack of image observations, as Atari's


def _make(env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> Any:
    """gymnasium.make; `max_episode_steps` replaces the registered time limit when given; `kwargs` go to the env."""
    import ale_py  # noqa: F401  (so that ALE ids in the registry resolve without import errors)
    import gymnasium

    register_minatar(env_id)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    return gymnasium.make(env_id, **kwargs)


def is_image_space(observation_space: Any) -> bool:
    """True for a 3-D Box observation, read as an (H, W, C) image."""
    from gymnasium import spaces

    return isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3


def check_gym_spaces(env_id: str, action_space: Any, observation_space: Any) -> None:
    """Raise ValueError unless actions are Discrete and observations a 1-D Box (vector) or a 3-D Box (H, W, C image)
    whose dtype is uint8 or whose bounds are finite (they map it to uint8)."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"{env_id}: speedy needs a Discrete action space, got {action_space} "
            "(continuous control is not supported by MuZero-style discrete search)"
        )
    if action_space.start != 0:
        raise ValueError(f"{env_id}: Discrete action space must start at 0, got start={action_space.start}")
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ValueError(
            f"{env_id}: speedy needs a 1-D Box observation (a vector) or a 3-D Box (an H×W×C image), "
            f"got {observation_space}"
        )
    if is_image_space(observation_space) and observation_space.dtype != np.uint8:
        bounds = np.concatenate([np.ravel(observation_space.low), np.ravel(observation_space.high)])
        if not np.isfinite(bounds.astype(np.float64)).all():
            raise ValueError(f"{env_id}: an image observation of dtype {observation_space.dtype} needs finite "
                             f"bounds to be mapped to uint8, got {observation_space}")


def frame_encoder(observation_space: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The map from one gym observation to the frame speedy stores (see the module docstring).

    Vector (D,) → (D,) float32. Image (H, W, C) → (C, H, W) uint8: as it is for uint8, else
    round(255 · (obs − low) / (high − low)) per element (bool → 0 / 255; constant elements → 0).
    """
    if not is_image_space(observation_space):
        return lambda obs: np.asarray(obs, dtype=np.float32)
    if observation_space.dtype == np.uint8:
        return lambda obs: np.asarray(obs, dtype=np.uint8).transpose(2, 0, 1)
    low = np.asarray(observation_space.low, dtype=np.float32)
    span = np.asarray(observation_space.high, dtype=np.float32) - low
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)

    def encode(obs: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(obs, dtype=np.float32) - low) * scale
        return np.rint(scaled).clip(0, 255).astype(np.uint8).transpose(2, 0, 1)

    return encode


@functools.cache
def gym_spec(env_id: str, frame_stack: int | None = None) -> EnvSpec:
    """EnvSpec of a registered gymnasium env (instantiates it once, then caches).

    frame_stack: frames per network input; None = 1 for vectors, `IMAGE_FRAME_STACK` (4) for images.
    """
    if frame_stack is not None and frame_stack < 1:
        raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
    env = _make(env_id)
    try:
        space = env.observation_space
        check_gym_spaces(env_id, env.action_space, space)
        n = int(env.action_space.n)
        try:
            meanings = tuple(str(m) for m in env.unwrapped.get_action_meanings())
        except AttributeError:
            meanings = minatar_action_meanings(env)
        image = is_image_space(space)
        if image:
            height, width, channels = (int(d) for d in space.shape)
            frame_shape: tuple[int, ...] = (channels, height, width)
        else:
            frame_shape = (int(space.shape[0]),)
        return EnvSpec(
            env_id=f"gym:{env_id}",
            kind="gym",
            frame_shape=frame_shape,
            frame_dtype=np.dtype(np.uint8 if image else np.float32),
            frame_stack=frame_stack or (IMAGE_FRAME_STACK if image else 1),
            num_actions=n,
            action_meanings=meanings,
        )
    finally:
        env.close()


class GymVecEnv:
    """N gymnasium envs stepped in a loop with same-step autoreset; implements `VectorEnv`.

    registered_time_limit: keep the env's registered time limit (evaluation); False replaces it by `max_frames`
    (training; see the module docstring).
    sticky_action_prob: MinAtar's sticky-action probability (its games take it as an argument); other gym
    tasks have no such argument and ignore it.
    """

    def __init__(self, spec: EnvSpec, num_envs: int, *, max_frames: int, seed: int = 0,
                 registered_time_limit: bool = True, sticky_action_prob: float = 0.0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.spec = spec
        self.num_envs = num_envs
        self.seed = seed  # suggested argument for reset()
        self.max_frames = max_frames
        name = spec.env_id.split(":", 1)[1]
        limit = None if registered_time_limit else max_frames
        kwargs = {"sticky_action_prob": sticky_action_prob} if is_minatar(name) else {}
        self._envs = [_make(name, limit, **kwargs) for _ in range(num_envs)]
        self._encode = frame_encoder(self._envs[0].observation_space)
        self._episodes = EpisodeTracker(num_envs)
        self._frames = np.zeros((num_envs, *spec.frame_shape), spec.frame_dtype)
        self._started = False

    def reset(self, seed: int) -> VecStep:
        """Start a new episode in every env; env i is seeded from `seed` (see `env_seeds`)."""
        for i, (env, s) in enumerate(zip(self._envs, env_seeds(seed, self.num_envs), strict=True)):
            obs, _ = env.reset(seed=int(s))
            self._frames[i] = self._encode(obs)
        self._episodes.reset()
        self._started = True
        return reset_step(self._frames.copy())

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env once; an env whose episode ended is reset and reports its new first frame."""
        if not self._started:
            raise RuntimeError("call reset(seed) before step()")
        actions = check_actions(actions, self.num_envs, self.spec.num_actions)
        n = self.num_envs
        raw = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        for i, env in enumerate(self._envs):
            obs, reward, term, trunc, _ = env.step(int(actions[i]))
            raw[i], terminated[i], truncated[i] = reward, term, trunc
            self._frames[i] = self._encode(obs)
        truncated |= ~terminated & (self._episodes.lengths + 1 >= self.max_frames)
        game_over = terminated | truncated
        for i in np.flatnonzero(game_over):
            obs, _ = self._envs[i].reset()
            self._frames[i] = self._encode(obs)
        ep_returns, ep_lengths = self._episodes.update(raw, game_over)
        return VecStep(
            frames=self._frames.copy(),
            rewards=raw.copy(),
            raw_rewards=raw,
            terminated=terminated,
            truncated=truncated,
            game_over=game_over,
            episode_returns=ep_returns,
            episode_lengths=ep_lengths,
        )

    def close(self) -> None:
        """Close every env."""
        for env in self._envs:
            env.close()
        self._envs = []
