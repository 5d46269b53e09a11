"""Turning root visit counts into actions and policy targets, and root exploration noise."""

from __future__ import annotations

import numpy as np


def _check_counts(visit_counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(visit_counts)
    if counts.ndim != 2 or counts.shape[1] < 1:
        raise ValueError(f"visit_counts must have shape (B, A) with A >= 1, got {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("visit_counts must be non-negative")
    return counts


def visit_distribution(visit_counts: np.ndarray, temperature: float) -> np.ndarray:
    """Policy counts ** (1 / T) normalised per row.

    visit_counts: (B, A) non-negative ints, each row with at least one visit; temperature T > 0.
    Returns (B, A) float32 rows summing to 1. Rows are scaled by their max first, so small T
    does not overflow.
    """
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    counts = _check_counts(visit_counts).astype(np.float64)
    top = counts.max(axis=1, keepdims=True)
    if np.any(top == 0):
        raise ValueError("every row of visit_counts needs at least one visit")
    powered = (counts / top) ** (1.0 / temperature)
    return (powered / powered.sum(axis=1, keepdims=True)).astype(np.float32)


def sample_actions(visit_counts: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Sample one action per row from visit_distribution(visit_counts, temperature).

    Returns (B,) int64 action indices; one uniform draw per row from `rng`.
    """
    probs = visit_distribution(visit_counts, temperature).astype(np.float64)
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    actions = (cdf <= u).sum(axis=1)
    # a zero-probability action can never be drawn; guard the float edge at the top of the cdf
    return np.minimum(actions, probs.shape[1] - 1).astype(np.int64)


def greedy_actions(visit_counts: np.ndarray) -> np.ndarray:
    """Most-visited action per row, (B,) int64; on ties the lowest action index wins."""
    return np.argmax(_check_counts(visit_counts), axis=1).astype(np.int64)


def self_play_actions(visit_counts: np.ndarray, temperature: float, greedy: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """(B,) int64 actions: sampled at `temperature` (sample_actions, one draw per row whatever `greedy`), and the
    most-visited action on the rows where `greedy` (B,) bool is set."""
    actions = sample_actions(visit_counts, temperature, rng)
    greedy = np.asarray(greedy, bool)
    if greedy.any():
        actions[greedy] = greedy_actions(np.asarray(visit_counts)[greedy])
    return actions


def dirichlet_noise(rng: np.random.Generator, batch: int, num_actions: int, alpha: float) -> np.ndarray:
    """(batch, num_actions) float32 Dirichlet(alpha, ..., alpha) samples, one row per root."""
    if batch < 0 or num_actions < 1:
        raise ValueError(f"need batch >= 0 and num_actions >= 1, got ({batch}, {num_actions})")
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return rng.dirichlet(np.full(num_actions, alpha), size=batch).astype(np.float32)
