"""Categorical value support: EfficientZero's invertible transform h and the two-hot projection.

h(x) = sign(x)·(√(|x|+1) − 1) + ε·x with ε = 0.001 squashes returns; values and value prefixes are predicted as a
categorical distribution over the integer support [−S, S] (S = 300 → 601 bins) of h(x).

`transform` names what the support is over: "h" (EfficientZero) or "none", the returns themselves, one bin per
return unit. Under h a difference of one return unit moves the prediction by h'(v) ≈ 1/(2√v) bins: 0.035 at v = 200,
so the cross-entropy barely tells two values of a long-lived state apart; with "none" it is one bin everywhere, and
S must cover the largest return (CartPole at γ = 0.997: ≈ 259).
"""

from __future__ import annotations

import torch

from speedy.config import VALUE_TRANSFORMS

EPSILON = 0.001


def h_transform(x: torch.Tensor) -> torch.Tensor:
    """h(x) = sign(x)(√(|x|+1) − 1) + εx, elementwise; any shape, float."""
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1.0) - 1.0) + EPSILON * x


def h_inverse(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of `h_transform` (closed form of the quadratic in √(|x|+1)), elementwise."""
    root = (torch.sqrt(1.0 + 4.0 * EPSILON * (torch.abs(y) + 1.0 + EPSILON)) - 1.0) / (2.0 * EPSILON)
    return torch.sign(y) * (root * root - 1.0)


def _check_transform(transform: str) -> None:
    if transform not in VALUE_TRANSFORMS:
        raise ValueError(f"value transform {transform!r}: expected one of {', '.join(map(repr, VALUE_TRANSFORMS))}")


def _forward(x: torch.Tensor, transform: str) -> torch.Tensor:
    """Return units → support units: h(x), or x itself under "none"."""
    _check_transform(transform)
    return h_transform(x) if transform == "h" else x


def _inverse(y: torch.Tensor, transform: str) -> torch.Tensor:
    """Support units → return units: h⁻¹(y), or y itself under "none"."""
    _check_transform(transform)
    return h_inverse(y) if transform == "h" else y


def scalar_to_support(x: torch.Tensor, support_size: int, transform: str = "h") -> torch.Tensor:
    """Two-hot encoding of h(x) (or of x, `transform` "none") on the integer support [−S, S].

    x: (...,) float scalars in return units. Returns (..., 2S+1) float probabilities whose expectation over the
    support equals h(x) (or x) clipped to [−S, S].
    """
    y = _forward(x, transform).clamp(-support_size, support_size)
    low = torch.floor(y)
    frac_high = y - low
    low_index = (low + support_size).long()
    high_index = (low_index + 1).clamp(max=2 * support_size)
    target = torch.zeros(*x.shape, 2 * support_size + 1, dtype=x.dtype, device=x.device)
    target.scatter_add_(-1, low_index.unsqueeze(-1), (1.0 - frac_high).unsqueeze(-1))
    target.scatter_add_(-1, high_index.unsqueeze(-1), frac_high.unsqueeze(-1))
    return target


def support_to_scalar(logits: torch.Tensor, support_size: int, transform: str = "h") -> torch.Tensor:
    """Expected value of softmax(logits) over [−S, S], mapped back through h⁻¹ (or as is, `transform` "none").

    logits: (..., 2S+1). Returns (...,) float in return units.
    """
    probs = torch.softmax(logits, dim=-1)
    support = torch.arange(-support_size, support_size + 1, dtype=probs.dtype, device=probs.device)
    return _inverse((probs * support).sum(-1), transform)
