"""Gymnasium tasks with a Discrete action space and a 1-D Box observation, as a `VectorEnv`.

The envs are stepped in a Python loop (these tasks are cheap; CartPole-v1 is the development task).
Rewards are never clipped, frames are float32 observations, and `max_frames` caps the agent steps
of one game (frame skip is 1 here).

Time limits: evaluation keeps the env's registered limit (CartPole-v1: 500 steps, the benchmark's score cap),
with `max_frames` on top. Training replaces it by `max_frames` (`registered_time_limit=False`): a time limit is
not a terminal state, but replay treats every episode end as one, so a 500-step cap would teach the value
function that a perfectly balanced pole is worth nothing 500 steps in (the state holds no clock). This mirrors
the Atari protocol, whose training and evaluation caps differ too.
"""

from __future__ import annotations

import functools

import numpy as np

from speedy.envs.types import EnvSpec, EpisodeTracker, VecStep, check_actions, env_seeds, reset_step


def _make(env_id: str, max_episode_steps: int | None = None):
    """gymnasium.make; `max_episode_steps` replaces the registered time limit when given."""
    import ale_py  # noqa: F401  (so that ALE ids in the registry resolve without import errors)
    import gymnasium

    if max_episode_steps is None:
        return gymnasium.make(env_id)
    return gymnasium.make(env_id, max_episode_steps=max_episode_steps)


def check_gym_spaces(env_id: str, action_space, observation_space) -> None:
    """Raise ValueError unless actions are Discrete and observations a 1-D Box."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"{env_id}: speedy needs a Discrete action space, got {action_space} "
            "(continuous control is not supported by MuZero-style discrete search)"
        )
    if action_space.start != 0:
        raise ValueError(f"{env_id}: Discrete action space must start at 0, got start={action_space.start}")
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"{env_id}: speedy needs a 1-D Box observation (a vector), got {observation_space}; "
            "image tasks go through the Atari path"
        )


@functools.cache
def gym_spec(env_id: str, frame_stack: int = 1) -> EnvSpec:
    """EnvSpec of a registered gymnasium env (instantiates it once, then caches)."""
    if frame_stack < 1:
        raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
    env = _make(env_id)
    try:
        check_gym_spaces(env_id, env.action_space, env.observation_space)
        n = int(env.action_space.n)
        try:
            meanings = tuple(str(m) for m in env.unwrapped.get_action_meanings())
        except AttributeError:
            meanings = tuple(f"ACTION_{i}" for i in range(n))
        return EnvSpec(
            env_id=f"gym:{env_id}",
            kind="gym",
            frame_shape=(int(env.observation_space.shape[0]),),
            frame_dtype=np.dtype(np.float32),
            frame_stack=frame_stack,
            num_actions=n,
            action_meanings=meanings,
        )
    finally:
        env.close()


class GymVecEnv:
    """N gymnasium envs stepped in a loop with same-step autoreset; implements `VectorEnv`.

    registered_time_limit: keep the env's registered time limit (evaluation); False replaces it by `max_frames`
    (training; see the module docstring).
    """

    def __init__(self, spec: EnvSpec, num_envs: int, *, max_frames: int, seed: int = 0,
                 registered_time_limit: bool = True) -> None:
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
        self._envs = [_make(name, limit) for _ in range(num_envs)]
        self._episodes = EpisodeTracker(num_envs)
        self._frames = np.zeros((num_envs, *spec.frame_shape), np.float32)
        self._started = False

    def reset(self, seed: int) -> VecStep:
        """Start a new episode in every env; env i is seeded from `seed` (see `env_seeds`)."""
        for i, (env, s) in enumerate(zip(self._envs, env_seeds(seed, self.num_envs), strict=True)):
            obs, _ = env.reset(seed=int(s))
            self._frames[i] = obs
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
            self._frames[i] = obs
        truncated |= ~terminated & (self._episodes.lengths + 1 >= self.max_frames)
        game_over = terminated | truncated
        for i in np.flatnonzero(game_over):
            obs, _ = self._envs[i].reset()
            self._frames[i] = obs
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
