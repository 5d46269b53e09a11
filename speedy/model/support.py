"""Categorical value support: EfficientZero's invertible transform h and the two-hot projection.

h(x) = sign(x)·(√(|x|+1) − 1) + ε·x with ε = 0.001 squashes returns; values and value prefixes are predicted as a
categorical distribution over the integer support [−S, S] (S = 300 → 601 bins) of h(x).
"""

from __future__ import annotations

import torch

EPSILON = 0.001


def h_transform(x: torch.Tensor) -> torch.Tensor:
    """h(x) = sign(x)(√(|x|+1) − 1) + εx, elementwise; any shape, float."""
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1.0) - 1.0) + EPSILON * x


def h_inverse(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of `h_transform` (closed form of the quadratic in √(|x|+1)), elementwise."""
    root = (torch.sqrt(1.0 + 4.0 * EPSILON * (torch.abs(y) + 1.0 + EPSILON)) - 1.0) / (2.0 * EPSILON)
    return torch.sign(y) * (root * root - 1.0)


def scalar_to_support(x: torch.Tensor, support_size: int) -> torch.Tensor:
    """Two-hot encoding of h(x) on the integer support [−S, S].

    x: (...,) float scalars in return units. Returns (..., 2S+1) float probabilities whose expectation over the
    support equals h(x) clipped to [−S, S].
    """
    y = h_transform(x).clamp(-support_size, support_size)
    low = torch.floor(y)
    frac_high = y - low
    low_index = (low + support_size).long()
    high_index = (low_index + 1).clamp(max=2 * support_size)
    target = torch.zeros(*x.shape, 2 * support_size + 1, dtype=x.dtype, device=x.device)
    target.scatter_add_(-1, low_index.unsqueeze(-1), (1.0 - frac_high).unsqueeze(-1))
    target.scatter_add_(-1, high_index.unsqueeze(-1), frac_high.unsqueeze(-1))
    return target


def support_to_scalar(logits: torch.Tensor, support_size: int) -> torch.Tensor:
    """Expected value of softmax(logits) over [−S, S], mapped back through h⁻¹.

    logits: (..., 2S+1). Returns (...,) float in return units.
    """
    probs = torch.softmax(logits, dim=-1)
    support = torch.arange(-support_size, support_size + 1, dtype=probs.dtype, device=probs.device)
    return h_inverse((probs * support).sum(-1))
