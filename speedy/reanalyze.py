"""Reanalysis: sampled replay positions → training targets (EfficientZero's batch worker, pure).

Three steps, each usable on its own so the distributed roles can split them without copying frames:
1. `sample_windows` (replay side): for B sampled positions t, the slices of their blocks the targets need — frame
   refs t−s+1 … t+K+n, actions, rewards, self-play policies, steps left in the episode, age. ≈ 100 bytes/position.
2. `compute_targets` (reanalyzer): value targets bootstrapped with the target model (n shortened for old data),
   value-prefix targets, policy targets re-searched with recent weights for the first ⌈ratio·B⌉ samples (replay
   shuffles the sample order, so which positions keep their self-play policy is random) and taken from self-play for
   the rest; frames are read by ref from the frame stores.
3. `BatchTargets.training_batch` (trainer): gathers the unroll frames by ref into a `TrainingBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from speedy.losses import TrainingBatch
from speedy.mcts import dirichlet_noise
from speedy.model import EfficientZeroNet
from speedy.obs import merge_stack
from speedy.replay import BlockLayout, ReplayBuffer, SampledPositions
from speedy.replay.frames import FrameSource
from speedy.search import INFERENCE_CHUNK, ModelSearch, as_tensor
from speedy.targets import bootstrap_offsets, corrected_td_steps, position_mask, value_prefix_targets, value_targets


@dataclass
class ReanalyzeSettings:
    discount: float  # per agent step
    lstm_horizon: int
    reanalyze_ratio: float
    offpolicy_correction_ratio: float
    training_steps: int
    dirichlet_alpha: float
    exploration_fraction: float
    inference_chunk: int = INFERENCE_CHUNK  # observation stacks per target-model forward pass


@dataclass
class SampleWindows:
    """What a reanalyzer needs about B sampled positions (s = frame stack, K = unroll, n = max TD steps)."""

    index: np.ndarray  # (B,) int64 replay position index (for priority updates)
    generation: np.ndarray  # (B,) int64 block generation when sampled
    weights: np.ndarray  # (B,) float32 importance-sampling weights
    frame_refs: np.ndarray  # (B, s + K + n) int64 refs of observations t−s+1 … t+K+n
    actions: np.ndarray  # (B, K) int64 actions t … t+K−1
    rewards: np.ndarray  # (B, K + n) float32 rewards t … t+K+n−1
    policies: np.ndarray  # (B, K + 1, A) float32 self-play visit distributions t … t+K
    valid_steps: np.ndarray  # (B,) int64 real transitions from t on
    truncated: np.ndarray  # (B,) bool the episode was cut by the time limit (its value goes on past the end)
    age: np.ndarray  # (B,) int64 env steps since the block was collected
    sampled_at_step: int = -1  # training steps done when replay drew the sample (-1: not recorded)


@dataclass
class BatchTargets:
    """A reanalysed batch without pixels: the trainer reads the unroll frames by ref."""

    index: np.ndarray  # (B,) int64
    generation: np.ndarray  # (B,) int64
    weights: np.ndarray  # (B,) float32
    frame_refs: np.ndarray  # (B, s + K) int64 refs of observations t−s+1 … t+K
    actions: np.ndarray  # (B, K) int64
    target_value_prefix: np.ndarray  # (B, K) float32
    target_value: np.ndarray  # (B, K + 1) float32
    target_policy: np.ndarray  # (B, K + 1, A) float32
    mask: np.ndarray  # (B, K + 1) float32
    sampled_at_step: int = -1  # training steps done when replay drew the sample (-1: not recorded)
    target_version: int = -1  # training step of the target weights the value targets bootstrapped from

    def training_batch(self, frames: FrameSource) -> TrainingBatch:
        return TrainingBatch(
            frames=torch.from_numpy(frames.get(self.frame_refs)),
            actions=torch.from_numpy(np.ascontiguousarray(self.actions, dtype=np.int64)),
            target_value_prefix=torch.from_numpy(np.ascontiguousarray(self.target_value_prefix)),
            target_value=torch.from_numpy(np.ascontiguousarray(self.target_value)),
            target_policy=torch.from_numpy(np.ascontiguousarray(self.target_policy)),
            mask=torch.from_numpy(np.ascontiguousarray(self.mask)),
            weights=torch.from_numpy(np.ascontiguousarray(self.weights)),
        )


def sample_windows(
    replay: ReplayBuffer, sample: SampledPositions, env_steps_now: int, train_steps_now: int = -1,
) -> SampleWindows:
    """Gather the windows of sampled positions from the replay rings (replay side); `train_steps_now` is recorded
    so the trainer can tell how far ahead of its step the sample was drawn."""
    layout = replay.layout
    K, n, s = layout.unroll_steps, layout.td_steps, layout.frame_stack
    return SampleWindows(
        index=sample.index,
        generation=sample.generation,
        weights=sample.weights,
        frame_refs=replay.window("frame_ids", sample, -(s - 1), s + K + n),
        actions=replay.window("actions", sample, 0, K),
        rewards=replay.window("rewards", sample, 0, K + n),
        policies=replay.window("policies", sample, 0, K + 1),
        valid_steps=replay.valid_steps[sample.slot] - sample.position,
        truncated=replay.truncated[sample.slot].copy(),
        age=env_steps_now - replay.collected_at[sample.slot],
        sampled_at_step=train_steps_now,
    )


@torch.no_grad()
def predicted_values(model: EfficientZeroNet, frames: np.ndarray, device: torch.device, chunk: int) -> np.ndarray:
    """Initial-inference values for frames (M, s, *frame_shape) → (M,) float32, in chunks."""
    values = []
    for begin in range(0, frames.shape[0], chunk):
        obs = as_tensor(merge_stack(frames[begin : begin + chunk]), device)
        values.append(model.initial_inference(obs).value.float().cpu().numpy())
    return np.concatenate(values) if values else np.zeros(0, dtype=np.float32)


def bootstrap_refs(frame_refs: np.ndarray, offsets: np.ndarray, frame_stack: int) -> np.ndarray:
    """Refs of the observation stacks at t+offsets (B, num_targets) → (B, num_targets, s), from refs t−s+1 … ."""
    index = offsets[..., None] + np.arange(frame_stack)[None, None, :]  # stack at t+j starts at window index j
    return np.take_along_axis(frame_refs[:, None, :], index, axis=2)


def n_step_value_targets(
    windows: SampleWindows, layout: BlockLayout, frames: FrameSource, target_model: EfficientZeroNet,
    settings: ReanalyzeSettings, device: torch.device, num_targets: int,
) -> np.ndarray:
    """Value targets z (B, num_targets) for t … t+num_targets−1, bootstrapped with `target_model` (eval mode)."""
    B, s = windows.frame_refs.shape[0], layout.frame_stack
    td = corrected_td_steps(windows.age, layout.td_steps, settings.offpolicy_correction_ratio,
                            settings.training_steps)
    offsets = bootstrap_offsets(td, windows.valid_steps, windows.truncated, num_targets)
    refs = bootstrap_refs(windows.frame_refs, offsets, s)
    target_model.eval()
    boot = predicted_values(target_model, frames.get(refs.reshape(B * num_targets, s)), device,
                            settings.inference_chunk).reshape(B, num_targets)
    rewards = windows.rewards[:, : num_targets - 1 + layout.td_steps]
    return value_targets(rewards, boot, td, windows.valid_steps, settings.discount, windows.truncated)


def refreshed_priorities(windows: SampleWindows, layout: BlockLayout, frames: FrameSource, model: EfficientZeroNet,
                         settings: ReanalyzeSettings, device: torch.device) -> np.ndarray:
    """Priority Refresh (SpeedyZero): |ẑ_t − v(s_t)| for the windows' positions with one model, ẑ the n-step value
    target bootstrapped with that same model (forward passes only, no search) → (B,) float32."""
    s = layout.frame_stack
    z = n_step_value_targets(windows, layout, frames, model, settings, device, 1)[:, 0]
    values = predicted_values(model, frames.get(windows.frame_refs[:, :s]), device, settings.inference_chunk)
    return np.abs(z - values).astype(np.float32)


def refresh_all_priorities(replay: ReplayBuffer, frames: FrameSource, model: EfficientZeroNet, version: int,
                           layout: BlockLayout, settings: ReanalyzeSettings, device: torch.device, chunk: int,
                           env_steps: int) -> int:
    """One Priority Refresh sweep over every held position, `chunk` positions per pass, as the refresher role does
    (inline mode's refresh). `version` = the training step of `model`'s weights: a position whose priority is newer
    keeps it. Returns the number of positions updated."""
    live = replay.live_positions()
    updated = 0
    for begin in range(0, live.size, chunk):
        positions = replay.positions(live[begin : begin + chunk])
        windows = sample_windows(replay, positions, env_steps)
        priorities = refreshed_priorities(windows, layout, frames, model, settings, device)
        updated += replay.update_priorities(positions.index, positions.generation, priorities, version)
    return updated


def compute_targets(
    windows: SampleWindows,
    layout: BlockLayout,
    frames: FrameSource,
    target_model: EfficientZeroNet,
    search: ModelSearch | None,
    settings: ReanalyzeSettings,
    rng: np.random.Generator,
    device: torch.device,
    target_version: int = -1,
) -> BatchTargets:
    """Reanalyse one batch. `search` (recent weights) may be None when the reanalyze ratio is 0;
    `target_version` (the training step of `target_model`'s weights) travels with the batch."""
    B = windows.frame_refs.shape[0]
    K, s = layout.unroll_steps, layout.frame_stack
    z = n_step_value_targets(windows, layout, frames, target_model, settings, device, K + 1)
    prefix = value_prefix_targets(windows.rewards[:, :K], settings.lstm_horizon)
    mask = position_mask(windows.valid_steps, K + 1)
    policy = np.array(windows.policies, dtype=np.float32)
    num_re = int(np.ceil(settings.reanalyze_ratio * B)) if search is not None else 0
    if num_re > 0:
        stacks = np.stack([windows.frame_refs[:num_re, k : k + s] for k in range(K + 1)], axis=1)  # (R, K+1, s)
        obs = merge_stack(frames.get(stacks.reshape(num_re * (K + 1), s)))
        noise = dirichlet_noise(rng, num_re * (K + 1), layout.num_actions, settings.dirichlet_alpha)
        out = search.run(obs, noise, seed=int(rng.integers(2**31)))
        policy[:num_re] = out.policy_target.reshape(num_re, K + 1, -1)
    policy *= mask[..., None]
    return BatchTargets(
        index=windows.index,
        generation=windows.generation,
        weights=windows.weights,
        frame_refs=windows.frame_refs[:, : s + K],
        actions=windows.actions,
        target_value_prefix=prefix,
        target_value=z,
        target_policy=policy,
        mask=mask,
        sampled_at_step=windows.sampled_at_step,
        target_version=target_version,
    )
