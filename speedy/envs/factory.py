"""Entry points: `env_spec` (cheap, for sizing networks) and `make_vector_env`."""

from __future__ import annotations

from typing import Literal

from speedy.envs.atari import AtariVecEnv, atari_spec
from speedy.envs.gym_env import GymVecEnv, gym_spec
from speedy.envs.ids import resolve_env_id
from speedy.envs.types import EnvSpec, VectorEnv


def env_spec(env_id: str, frame_size: int = 96, frame_stack: int | None = None) -> EnvSpec:
    """Spec of a task given any accepted id ("Breakout", "ALE/Breakout-v5", "CartPole-v1", ...).

    frame_size: side of the square Atari frame in pixels (ignored for gym tasks).
    frame_stack: frames per network input; default 4 for Atari and gym image observations, 1 for vectors.
    """
    resolved = resolve_env_id(env_id)
    if resolved.kind == "atari":
        spec = atari_spec(resolved.name, frame_size)
        if frame_stack is not None:
            if frame_stack < 1:
                raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
            spec = EnvSpec(**{**spec.__dict__, "frame_stack": frame_stack})
        return spec
    return gym_spec(resolved.name, frame_stack)


def make_vector_env(
    env_id: str,
    num_envs: int,
    *,
    seed: int,
    mode: Literal["train", "eval"],
    sticky_action_prob: float = 0.0,
    num_threads: int = 1,
    frame_size: int = 96,
    max_frames_train: int = 12_000,
    max_frames_eval: int = 108_000,
    frame_stack: int | None = None,
) -> VectorEnv:
    """Create `num_envs` environments of one task and reset them with `seed`.

    mode "train": Atari with episodic life and sign-clipped rewards, cap `max_frames_train` raw frames;
    mode "eval": raw scores, no episodic life, cap `max_frames_eval` raw frames. For gym tasks the caps
    count agent steps, training episodes run to `max_frames_train` in place of the env's registered time limit
    (which evaluation keeps; see speedy/envs/gym_env.py), `sticky_action_prob` goes to MinAtar's games (others
    ignore it), and `num_threads` / `frame_size` are ignored.
    The env is not reset here (an Atari reset with a seed reloads every ROM, ~0.1 s per env): call
    `env.reset(seed)` to get the first frames; `seed` is kept as `env.seed` for that purpose. The same
    seed reproduces the same no-op starts and (with sticky actions) the same action repeats.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    spec = env_spec(env_id, frame_size, frame_stack)
    max_frames = max_frames_train if mode == "train" else max_frames_eval
    env: VectorEnv
    if spec.kind == "atari":
        env = AtariVecEnv(
            spec,
            num_envs,
            train=mode == "train",
            max_frames=max_frames,
            sticky_action_prob=sticky_action_prob,
            num_threads=num_threads,
            seed=seed,
        )
    else:
        env = GymVecEnv(spec, num_envs, max_frames=max_frames, seed=seed, registered_time_limit=mode == "eval",
                        sticky_action_prob=sticky_action_prob)
    return env
