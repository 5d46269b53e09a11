"""Training targets from stored trajectories (pure numpy; EfficientZero's reanalysis arithmetic).

Everything is relative to a sampled position t, for unroll steps k = 0 … K (B = batch):
- value target z_k = Σ_{i<n} γ^i r_{t+k+i} + γ^n v(s_{t+k+n}) when t+k+n is a real state, without the bootstrap
  otherwise, and 0 for positions past the end of the episode (t+k ≥ valid_steps);
- except in an episode the time limit cut short (`truncated`): there the game goes on past the end, so a target whose
  n steps reach the end T bootstraps γ^(T−t−k) v(s_T), with v(s_T) read off the last stored state s_{T−1} (the env
  resets before the final observation is kept; one step of a 0.997-discounted value apart). Treating a cut as a
  terminal teaches "healthy states are worth a few rewards", and prioritized replay samples exactly those
  positions most (their error is largest);
- n shrinks for old data (off-policy correction): n = clip(n_max − ⌊age / (ratio · training_steps)⌋, 1, n_max);
- value-prefix target for k = 1 … K: rewards summed since the last LSTM reset (every `horizon` steps);
- mask_k = 1 where t+k is a real state (k < valid steps). The losses (speedy/losses.py) count the consistency term
  where mask_k = 1 and the policy, value and value-prefix terms at k ≥ 1 where mask_{k−1} = 1 (k ≤ valid steps:
  the final state after the last real transition still has a value (0) and a value prefix to learn).
"""

from __future__ import annotations

import numpy as np


def corrected_td_steps(age: np.ndarray, td_steps: int, correction_ratio: float, training_steps: int) -> np.ndarray:
    """n per sample: age (B,) env steps since collection → (B,) int64 in [1, td_steps]."""
    period = max(1, int(correction_ratio * training_steps))
    return np.clip(td_steps - np.asarray(age, dtype=np.int64) // period, 1, td_steps)


def bootstrap_offsets(td_steps: np.ndarray, valid_steps: np.ndarray, truncated: np.ndarray | None,
                      num_targets: int) -> np.ndarray:
    """(B, num_targets) int64 offset from t of the state each target bootstraps from: k + n_b, or in a truncated
    episode at most the last stored state (valid_steps − 1) that stands in for s_T."""
    offsets = np.arange(num_targets)[None, :] + np.asarray(td_steps, np.int64)[:, None]
    if truncated is None:
        return offsets
    last = np.asarray(valid_steps, np.int64)[:, None] - 1
    return np.where(np.asarray(truncated, bool)[:, None], np.minimum(offsets, last), offsets)


def value_targets(
    rewards: np.ndarray,
    bootstrap_values: np.ndarray,
    td_steps: np.ndarray,
    valid_steps: np.ndarray,
    discount: float,
    truncated: np.ndarray | None = None,
) -> np.ndarray:
    """n-step value targets z (B, K+1).

    rewards: (B, K + n_max) rewards r_t … r_{t+K+n_max−1}, 0 past the episode end.
    bootstrap_values: (B, K+1) target-model value of the state at `bootstrap_offsets` (ignored where a terminal
    episode has no real state there).
    td_steps: (B,) n per sample (≤ n_max). valid_steps: (B,) real transitions from t on (t+j real iff j < valid).
    truncated: (B,) bool, the sample's episode was cut by the time limit, not ended (None: none was).
    """
    batch, width = rewards.shape
    num_targets = bootstrap_values.shape[1]
    n_max = width - (num_targets - 1)
    k = np.arange(num_targets)[None, :]  # (1, K+1)
    i = np.arange(n_max)[None, None, :]  # (1, 1, n_max)
    index = k[..., None] + i  # (1, K+1, n_max) reward index k+i
    use = (i < td_steps[:, None, None]) & (index < valid_steps[:, None, None])
    gathered = np.take_along_axis(rewards[:, None, :].repeat(num_targets, 1), np.broadcast_to(index, (batch,
                                  num_targets, n_max)), axis=2)
    returns = (gathered * use * discount ** i.astype(np.float64)).sum(-1)
    bootstrap_index = k + td_steps[:, None]
    has_bootstrap = bootstrap_index < valid_steps[:, None]
    power = td_steps[:, None].astype(np.float64) + np.zeros_like(returns)
    after_end = np.zeros_like(has_bootstrap)
    if truncated is not None:
        cut = np.asarray(truncated, bool)[:, None] & ~has_bootstrap  # the n steps reach past the cut: bootstrap s_T
        power = np.where(cut, np.maximum(valid_steps[:, None] - k, 0), power)
        has_bootstrap = has_bootstrap | cut
        after_end = cut & (k >= valid_steps[:, None])
    returns += np.where(has_bootstrap, discount**power * bootstrap_values, 0.0)
    return np.where((k < valid_steps[:, None]) | after_end, returns, 0.0).astype(np.float32)


def value_prefix_targets(rewards: np.ndarray, horizon: int) -> np.ndarray:
    """Value-prefix targets (B, K) for unroll steps 1 … K from rewards (B, K) r_t … r_{t+K−1}.

    Target k sums r_{t+j} for j from the last multiple of `horizon` below k up to k−1 (the LSTM is reset there).
    """
    batch, K = rewards.shape
    targets = np.zeros((batch, K), dtype=np.float32)
    running = np.zeros(batch, dtype=np.float64)
    for j in range(K):
        if j % horizon == 0:
            running[:] = 0.0
        running += rewards[:, j]
        targets[:, j] = running
    return targets


def position_mask(valid_steps: np.ndarray, num_targets: int) -> np.ndarray:
    """(B, K+1) float32: 1 where t+k is a real state (k < valid_steps)."""
    return (np.arange(num_targets)[None, :] < np.asarray(valid_steps)[:, None]).astype(np.float32)


def beta_schedule(progress: float, beta_start: float, beta_end: float) -> float:
    """Importance-sampling exponent annealed linearly over training progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return beta_start + (beta_end - beta_start) * progress


def visit_temperature(progress: float, temperatures: list[float], milestones: list[float]) -> float:
    """Self-play visit temperature: temperatures[i] until training progress passes milestones[i]."""
    for temperature, milestone in zip(temperatures, milestones, strict=False):
        if progress < milestone:
            return temperature
    return temperatures[-1]
