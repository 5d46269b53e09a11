"""Environments: Atari with the EfficientZero protocol (ALE's C++ vector env) and gymnasium tasks (vector or image
observations; MinAtar's games with the optional `minatar` extra).

Public API: `make_vector_env`, `env_spec`, `EnvSpec`, `VecStep`, `VectorEnv`, `human_normalized_score`.
"""

from speedy.envs.factory import env_spec, make_vector_env
from speedy.envs.scores import human_normalized_score
from speedy.envs.types import EnvSpec, VecStep, VectorEnv

__all__ = ["EnvSpec", "VecStep", "VectorEnv", "env_spec", "human_normalized_score", "make_vector_env"]
