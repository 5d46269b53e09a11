"""Turning root visit counts into actions and policy targets, and root exploration noise.

The greedy action (evaluation, and self-play envs that play as the evaluator does) is one of GREEDY_RULES:
- "visits": the most-visited root child (EfficientZero);
- "completed_q": argmax over actions of prior logits + σ(completed Q), the final action of Gumbel MuZero
  (Danihelka et al. 2022, "Policy improvement by planning with Gumbel"; EfficientZero V2 acts the same way) without
  its Gumbel noise. A child the search visited counts with its searched Q = r + γ·v; an unvisited one with the
  visit-weighted mix of the network's value and the visited children's Q. Q is rescaled to [0, 1] per root
  (min to max over actions), and σ(q̂) = (c_visit + max_b N(b)) · c_scale · q̂ (c_visit 50, c_scale 0.1). With few
  simulations the visit counts follow the prior more than the values (pUCT needs many visits to move far from the
  prior); this rule acts on what the values found.
- "one_step": argmax over actions of r̂(s, a) + γ·v̂(s'_a), the networks' one-step lookahead from the root (one
  recurrent inference of every action; the search's visits and deeper Q play no part). Issue 10's CartPole
  checkpoints that lost games by the visits often won them this way (docs/benchmarks.md, eleventh session).

The policy target (what self-play and reanalysis store for the policy loss) is one of POLICY_TARGET_RULES: the visit
distribution (EfficientZero), or softmax(prior logits + σ(completed Q)) (Gumbel MuZero's improved policy).
"""

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


GREEDY_RULES = ("visits", "completed_q", "one_step")
POLICY_TARGET_RULES = ("visits", "completed_q")
C_VISIT = 50.0  # Gumbel MuZero's σ constants (the paper's and EfficientZero V2's values)
C_SCALE = 0.1


def completed_q(visit_counts: np.ndarray, root_q: np.ndarray, prior_logits: np.ndarray,
                network_value: np.ndarray) -> np.ndarray:
    """(B, A) float64 Q of every root child: its searched Q where visited, else the root's mixed value
    v_mix = (v̂ + ΣN / Σ_{visited} π · Σ_{visited} π(a) q(a)) / (1 + ΣN), π = softmax(prior_logits) (no noise),
    v̂ = network_value (B,), q = root_q (B, A) in return units, N = visit_counts (B, A)."""
    counts = _check_counts(visit_counts).astype(np.float64)
    q = np.asarray(root_q, np.float64)
    logits = np.asarray(prior_logits, np.float64)
    prior = np.exp(logits - logits.max(axis=1, keepdims=True))
    prior /= prior.sum(axis=1, keepdims=True)
    visited = counts > 0
    total = counts.sum(axis=1)
    visited_prior = np.where(visited, prior, 0.0).sum(axis=1)
    weighted_q = np.where(visited, prior * q, 0.0).sum(axis=1)
    mixed = np.asarray(network_value, np.float64).copy()
    seen = visited_prior > 0
    mixed[seen] = (mixed[seen] + total[seen] / visited_prior[seen] * weighted_q[seen]) / (1.0 + total[seen])
    return np.where(visited, q, mixed[:, None])


def improved_logits(visit_counts: np.ndarray, root_q: np.ndarray, prior_logits: np.ndarray,
                    network_value: np.ndarray) -> np.ndarray:
    """(B, A) float64 prior_logits + σ(q̂), q̂ = completed_q rescaled to [0, 1] per row (all equal: 0) and
    σ(q̂) = (C_VISIT + max_b N(b)) · C_SCALE · q̂ (see the module docstring)."""
    q = completed_q(visit_counts, root_q, prior_logits, network_value)
    low, high = q.min(axis=1, keepdims=True), q.max(axis=1, keepdims=True)
    scaled = (q - low) / np.maximum(high - low, 1e-8)
    sigma = (C_VISIT + np.asarray(visit_counts).max(axis=1, keepdims=True)) * C_SCALE * scaled
    return np.asarray(prior_logits, np.float64) + sigma


def completed_q_actions(visit_counts: np.ndarray, root_q: np.ndarray, prior_logits: np.ndarray,
                        network_value: np.ndarray) -> np.ndarray:
    """(B,) int64 argmax of improved_logits (Gumbel MuZero's final action without noise); ties: lowest index."""
    return np.argmax(improved_logits(visit_counts, root_q, prior_logits, network_value), axis=1).astype(np.int64)


def completed_q_policy(visit_counts: np.ndarray, root_q: np.ndarray, prior_logits: np.ndarray,
                       network_value: np.ndarray) -> np.ndarray:
    """(B, A) float32 softmax(improved_logits): Gumbel MuZero's policy target, rows summing to 1."""
    logits = improved_logits(visit_counts, root_q, prior_logits, network_value)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def greedy_actions(visit_counts: np.ndarray) -> np.ndarray:
    """Most-visited action per row, (B,) int64; on ties the lowest action index wins."""
    return np.argmax(_check_counts(visit_counts), axis=1).astype(np.int64)


def self_play_actions(visit_counts: np.ndarray, temperature: float, greedy: np.ndarray,
                      rng: np.random.Generator, greedy_choice: np.ndarray | None = None) -> np.ndarray:
    """(B,) int64 actions: sampled at `temperature` (sample_actions, one draw per row whatever `greedy`), and the
    greedy action on the rows where `greedy` (B,) bool is set: `greedy_choice` (B,) (the search's greedy rule),
    else the most-visited action."""
    actions = sample_actions(visit_counts, temperature, rng)
    greedy = np.asarray(greedy, bool)
    if greedy.any():
        choice = greedy_actions(visit_counts) if greedy_choice is None else np.asarray(greedy_choice, np.int64)
        actions[greedy] = choice[greedy]
    return actions


def dirichlet_noise(rng: np.random.Generator, batch: int, num_actions: int, alpha: float) -> np.ndarray:
    """(batch, num_actions) float32 Dirichlet(alpha, ..., alpha) samples, one row per root."""
    if batch < 0 or num_actions < 1:
        raise ValueError(f"need batch >= 0 and num_actions >= 1, got ({batch}, {num_actions})")
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return rng.dirichlet(np.full(num_actions, alpha), size=batch).astype(np.float32)
