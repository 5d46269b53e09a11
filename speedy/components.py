"""Building blocks derived from a `Config` and the task's `EnvSpec`, shared by inline mode and the roles."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speedy.checkpoint import write_text_atomic
from speedy.config import Config
from speedy.envs import env_spec
from speedy.envs.types import EnvSpec
from speedy.mcts import SearchConfig
from speedy.model import EfficientZeroNet, NetworkSpec
from speedy.obs import is_small_image, stacked_shape
from speedy.reanalyze import ReanalyzeSettings
from speedy.replay import BlockLayout
from speedy.targets import visit_temperature

ATARI_FRAME_SKIP = 4


def task_spec(config: Config) -> EnvSpec:
    """The task's `EnvSpec` with the run's frame size and frame stack (`env.frame_stack`, 0 = the task's default)."""
    return env_spec(config.env.id, frame_size=config.env.frame_size, frame_stack=config.env.frame_stack or None)


def env_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of `make_vector_env` from the run's `env` settings (sticky actions, frame size and stack,
    episode caps), so that every role's environments match `task_spec(config)`."""
    e = config.env
    return dict(sticky_action_prob=e.sticky_action_prob, frame_size=e.frame_size, frame_stack=e.frame_stack or None,
                max_frames_train=e.max_frames_train, max_frames_eval=e.max_frames_eval)


def resolve_device(name: str) -> torch.device:
    """'auto' → the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device = {name!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def agent_discount(config: Config, spec: EnvSpec) -> float:
    """Discount per agent step: train.discount is per raw frame, and an Atari agent step is 4 frames."""
    return config.train.discount ** (ATARI_FRAME_SKIP if spec.kind == "atari" else 1)


def network_spec(config: Config, spec: EnvSpec) -> NetworkSpec:
    """The network for this task: input (C·stack, H, W) or (stack·D,) from the spec, sizes from `model`; an image
    keeps its grid (no downsampling stem) when `model.downsample` says "none", or "auto" and the frame is small."""
    m = config.model
    observation_shape = stacked_shape(spec.frame_shape, spec.frame_stack)
    small = is_small_image(observation_shape)
    if m.obs_scale and (len(spec.frame_shape) != 1 or len(m.obs_scale) != spec.frame_shape[0]):
        raise ValueError(f"model.obs_scale = {m.obs_scale}: expected one multiplier per component of the "
                         f"observation (shape {spec.frame_shape}); only vector observations can be scaled")
    return NetworkSpec(
        observation_shape=observation_shape,
        num_actions=spec.num_actions,
        support_size=m.support_size,
        value_transform=m.value_transform,
        channels=m.channels,
        reduced_channels=m.reduced_channels,
        lstm_hidden=m.lstm_hidden,
        norm=m.norm,
        head_hidden=tuple(m.head_hidden),
        proj_hidden=m.proj_hidden,
        proj_out=m.proj_out,
        pred_hidden=m.pred_hidden,
        mlp_latent=m.mlp_latent,
        mlp_hidden=tuple(m.mlp_hidden),
        downsample=m.downsample == "efficientzero" or (m.downsample == "auto" and not small),
        input_norm=m.input_norm,
        obs_scale=tuple(float(x) for x in m.obs_scale) * spec.frame_stack,
        one_hot_actions=m.action_encoding == "one_hot",
    )


def build_model(config: Config, spec: EnvSpec, device: torch.device) -> EfficientZeroNet:
    return EfficientZeroNet(network_spec(config, spec)).to(device)


def search_config(config: Config, spec: EnvSpec, num_simulations: int | None = None,
                  acts_greedily: bool = True) -> SearchConfig:
    """The search settings of `config.mcts`. A search whose greedy action nobody plays (reanalysis; self-play with no
    greedy envs) gets the free "visits" rule whatever `mcts.greedy_action` says: "one_step" costs an inference."""
    m = config.mcts
    return SearchConfig(
        num_simulations=num_simulations or m.num_simulations,
        discount=agent_discount(config, spec),
        pb_c_base=m.pb_c_base,
        pb_c_init=m.pb_c_init,
        value_delta_max=m.value_delta_max,
        lstm_horizon=m.lstm_horizon,
        dirichlet_alpha=m.dirichlet_alpha,
        exploration_fraction=m.exploration_fraction,
        greedy_rule=m.greedy_action if acts_greedily else "visits",
        policy_target_rule=m.policy_target,
    )


def block_layout(config: Config, spec: EnvSpec) -> BlockLayout:
    return BlockLayout(
        block_length=config.replay.block_length,
        unroll_steps=config.train.unroll_steps,
        td_steps=config.train.td_steps,
        frame_stack=spec.frame_stack,
        num_actions=spec.num_actions,
    )


def frame_store_capacity(config: Config, layout: BlockLayout, num_envs: int, num_actors: int = 1) -> int:
    """Frames one actor's store keeps: its share of the positions replay holds (`replay.capacity`: one frame per
    position, counted as the buffer counts them), plus every open episode block and its lookahead, × 1.5 for the
    first frame of each episode and actors that run ahead of their share."""
    per_actor = config.replay.capacity // max(1, num_actors)
    in_flight = num_envs * (layout.frames_per_block + layout.block_length + 1024)
    return int(1.5 * (per_actor + in_flight))


def self_play_temperature(config: Config, train_steps: int) -> float:
    """Visit temperature after `train_steps`; milestones are fractions of train.training_steps (not of the last
    steps that follow), as EfficientZero's 1 → 0.5 → 0.25 at 50k and 75k of 100k."""
    return visit_temperature(train_steps / config.train.training_steps, config.actor.temperature_schedule,
                             config.actor.temperature_milestones)


def greedy_envs_on(config: Config, train_steps: int) -> bool:
    """Whether the greedy envs play greedily after `train_steps`: from actor.greedy_envs_from × train.training_steps
    on (before it they explore as the others do)."""
    return train_steps >= config.actor.greedy_envs_from * config.train.training_steps


def greedy_env_mask(config: Config, on: bool) -> np.ndarray:
    """(actor.num_envs,) bool: which of an actor's envs play greedily: its last actor.greedy_envs when `on`
    (greedy_envs_on), none otherwise."""
    mask = np.zeros(config.actor.num_envs, bool)
    if on:
        mask[config.actor.num_envs - config.actor.greedy_envs:] = True
    return mask


def root_noise_fraction(config: Config, greedy: np.ndarray) -> np.ndarray:
    """(N,) float32 weight of each env's root noise: mcts.exploration_fraction, 0 where `greedy` (N,) bool."""
    return np.where(np.asarray(greedy, bool), 0.0, config.mcts.exploration_fraction).astype(np.float32)


def reanalyze_settings(config: Config, spec: EnvSpec) -> ReanalyzeSettings:
    return ReanalyzeSettings(
        discount=agent_discount(config, spec),
        lstm_horizon=config.mcts.lstm_horizon,
        reanalyze_ratio=config.train.reanalyze_ratio,
        offpolicy_correction_ratio=config.train.offpolicy_correction_ratio,
        training_steps=config.train.training_steps,
        dirichlet_alpha=config.mcts.dirichlet_alpha,
        exploration_fraction=config.mcts.exploration_fraction,
    )


def make_run_dir(config: Config, explicit: str | Path | None = None) -> Path:
    """A fresh directory runs/<game>-<time>-s<seed> (or `explicit`), with the resolved config written to it."""
    if explicit is not None:
        run_dir = Path(explicit)
    else:
        name = config.env.id.split(":", 1)[1].replace("/", "_")
        run_dir = Path(config.run.run_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-s{config.run.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # atomically: the nodes of a cluster on one machine (or a shared file system) write and read the same file
    write_text_atomic(run_dir / "config.json", json.dumps(dataclasses.asdict(config), indent=2))
    return run_dir
