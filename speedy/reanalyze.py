"""Reanalysis: turn sampled replay positions into a `TrainingBatch` (EfficientZero's batch worker, pure).

For B sampled positions t and k = 0 … K: frames for the training unroll; value targets bootstrapped with the
target model (n shortened for old data); value-prefix targets; policy targets re-searched with recent weights for
the first ⌈ratio·B⌉ samples (the sample order is random) and taken from self-play for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from speedy.losses import TrainingBatch
from speedy.mcts import dirichlet_noise, visit_distribution
from speedy.model import EfficientZeroNet
from speedy.obs import merge_stack
from speedy.replay import BlockLayout, ReplayBuffer, SampledPositions
from speedy.replay.frames import FrameSource
from speedy.search import ModelSearch, as_tensor
from speedy.targets import corrected_td_steps, position_mask, value_prefix_targets, value_targets


@dataclass
class ReanalyzeSettings:
    discount: float  # per agent step
    lstm_horizon: int
    reanalyze_ratio: float
    offpolicy_correction_ratio: float
    training_steps: int
    dirichlet_alpha: float
    exploration_fraction: float
    inference_chunk: int = 1024  # observation stacks per target-model forward pass


@dataclass
class ReplayRows:
    """The replay arrays of the sampled blocks, gathered once (B rows). Named so a reanalyzer in another process
    can receive the same fields from the replay role."""

    frame_ids: np.ndarray  # (B, frames_per_block) int64 refs
    actions: np.ndarray  # (B, L + K)
    rewards: np.ndarray  # (B, L + K + n)
    policies: np.ndarray  # (B, L + K, A)
    valid_steps: np.ndarray  # (B,)
    collected_at: np.ndarray  # (B,)

    @staticmethod
    def gather(replay: ReplayBuffer, slots: np.ndarray) -> ReplayRows:
        return ReplayRows(
            frame_ids=replay.frame_ids[slots],
            actions=replay.actions[slots],
            rewards=replay.rewards[slots],
            policies=replay.policies[slots],
            valid_steps=replay.valid_steps[slots],
            collected_at=replay.collected_at[slots],
        )


def _window(rows: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """rows (B, W, ...) → (B, width, ...) slices rows[b, start_b : start_b + width]."""
    index = start[:, None] + np.arange(width)[None, :]
    return np.take_along_axis(rows, index.reshape(*index.shape, *([1] * (rows.ndim - 2))), axis=1)


@torch.no_grad()
def predicted_values(model: EfficientZeroNet, frames: np.ndarray, device: torch.device, chunk: int) -> np.ndarray:
    """Initial-inference values for frames (M, s, *frame_shape) → (M,) float32, in chunks."""
    values = []
    for begin in range(0, frames.shape[0], chunk):
        obs = as_tensor(merge_stack(frames[begin : begin + chunk]), device)
        values.append(model.initial_inference(obs).value.float().cpu().numpy())
    return np.concatenate(values) if values else np.zeros(0, dtype=np.float32)


def make_training_batch(
    sample: SampledPositions,
    rows: ReplayRows,
    layout: BlockLayout,
    frames: FrameSource,
    target_model: EfficientZeroNet,
    search: ModelSearch | None,
    settings: ReanalyzeSettings,
    env_steps_now: int,
    rng: np.random.Generator,
    device: torch.device,
) -> TrainingBatch:
    """Assemble one training batch (CPU tensors). `search` (recent weights) may be None when ratio is 0."""
    B = sample.position.shape[0]
    K, n_max, s = layout.unroll_steps, layout.td_steps, layout.frame_stack
    t = sample.position.astype(np.int64)
    valid_from_t = rows.valid_steps - t
    frame_refs = _window(rows.frame_ids, t, s + K + n_max)  # obs t−s+1 … t+K+n_max
    train_frames = frames.get(frame_refs[:, : s + K])  # (B, s+K, *frame)

    td = corrected_td_steps(env_steps_now - rows.collected_at, n_max, settings.offpolicy_correction_ratio,
                            settings.training_steps)
    boot_start = np.arange(K + 1)[None, :] + td[:, None]  # (B, K+1) obs index t+k+n relative to t
    boot_refs = np.take_along_axis(frame_refs[:, None, :].repeat(K + 1, 1),
                                   boot_start[..., None] + np.arange(s)[None, None, :], axis=2)  # (B, K+1, s)
    target_model.eval()
    boot_values = predicted_values(target_model, frames.get(boot_refs.reshape(B * (K + 1), s)), device,
                                   settings.inference_chunk).reshape(B, K + 1)
    rewards = _window(rows.rewards, t, K + n_max)
    z = value_targets(rewards, boot_values, td, valid_from_t, settings.discount)
    prefix = value_prefix_targets(rewards[:, :K], settings.lstm_horizon)
    mask = position_mask(valid_from_t, K + 1)

    policy = _window(rows.policies, t, K + 1).copy()
    num_re = int(np.ceil(settings.reanalyze_ratio * B)) if search is not None else 0
    if num_re > 0:
        stacks = np.stack([frame_refs[:num_re, k : k + s] for k in range(K + 1)], axis=1)  # (R, K+1, s)
        obs = merge_stack(frames.get(stacks.reshape(num_re * (K + 1), s)))
        noise = dirichlet_noise(rng, num_re * (K + 1), layout.num_actions, settings.dirichlet_alpha)
        out = search.run(obs, noise, seed=int(rng.integers(2**31)))
        policy[:num_re] = visit_distribution(out.visit_counts, 1.0).reshape(num_re, K + 1, -1)
    policy *= mask[..., None]

    return TrainingBatch(
        frames=torch.from_numpy(train_frames),
        actions=torch.from_numpy(_window(rows.actions, t, K)),
        target_value_prefix=torch.from_numpy(prefix),
        target_value=torch.from_numpy(z),
        target_policy=torch.from_numpy(policy.astype(np.float32)),
        mask=torch.from_numpy(mask),
        weights=torch.from_numpy(sample.weights),
    )
