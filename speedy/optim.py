"""Optimizers and the learning-rate schedule: SGD (EfficientZero), Adam (small tasks), clipped LARS (SpeedyZero)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def learning_rate(step: int, base_lr: float, warmup_steps: int, decay_steps: int, decay_rate: float) -> float:
    """Linear warm-up over `warmup_steps`, then ×decay_rate every `decay_steps` (EfficientZero's step schedule)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr * decay_rate ** ((step - warmup_steps) // max(1, decay_steps))


class ClippedLARS(torch.optim.Optimizer):
    """SGD with momentum whose per-tensor rate is lr · min(η‖w‖ / (‖g‖ + β‖w‖), c) for weights with ndim > 1.

    Biases and normalisation parameters (ndim ≤ 1) take plain SGD steps; the trust ratio is 1 where a norm is 0.
    Weight decay is added to the gradient before the trust ratio is computed.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                 eta: float, clip: float, beta: float) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta,
                                  "clip": clip, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's Optimizer signature
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                scale = 1.0
                if param.ndim > 1:
                    w_norm = torch.linalg.vector_norm(param)
                    g_norm = torch.linalg.vector_norm(grad)
                    trust = group["eta"] * w_norm / (g_norm + group["beta"] * w_norm)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    scale = torch.clamp(trust, max=group["clip"])
                buf = self.state[param].get("momentum")
                if buf is None:
                    buf = self.state[param]["momentum"] = torch.zeros_like(param)
                buf.mul_(group["momentum"]).add_(grad * scale)
                param.add_(buf, alpha=-group["lr"])
        return None


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float,
                    lars_eta: float = 0.001, lars_clip: float = 1.0, lars_beta: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "lars":
        return ClippedLARS(params, lr, momentum, weight_decay, lars_eta, lars_clip, lars_beta)
    raise ValueError(f"unknown optimizer {name!r}: expected 'sgd', 'adam' or 'lars'")
