"""One training step: loss, 1/K gradient scale, clipping, optimizer step, learning-rate schedule."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from speedy.augment import build_augmentation
from speedy.config import Config
from speedy.losses import LossWeights, TrainingBatch, unroll_loss
from speedy.model import EfficientZeroNet
from speedy.optim import build_optimizer, learning_rate


@dataclass
class TrainStats:
    step: int
    lr: float
    total_loss: float
    value_prefix_loss: float
    value_loss: float
    policy_loss: float
    consistency_loss: float
    grad_norm: float
    priorities: np.ndarray  # (B,) new priorities for the sampled positions (|error|, without ε)


class Learner:
    def __init__(self, model: EfficientZeroNet, config: Config, frame_stack: int, device: torch.device) -> None:
        self.model = model
        self.config = config
        self.frame_stack = frame_stack
        self.device = device
        t = config.train
        self.optimizer = build_optimizer(model, t.optimizer, t.lr, t.momentum, t.weight_decay,
                                         t.lars_eta, t.lars_clip, t.lars_beta)
        self.loss_weights = LossWeights(t.value_prefix_loss_weight, t.value_loss_weight, t.policy_loss_weight,
                                        t.consistency_loss_weight)
        self.warmup_steps = int(t.lr_warmup_fraction * t.training_steps)  # EfficientZero: 1% of 100k
        self.augment = build_augmentation(t.augmentation, model.spec.observation_shape, config.run.seed + 31, device)
        self.step = 0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.train.mixed_precision and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: TrainingBatch) -> TrainStats:
        t = self.config.train
        lr = learning_rate(self.step, t.lr, self.warmup_steps, t.lr_decay_steps, t.lr_decay_rate)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        batch = batch.to(self.device)
        with self._autocast():
            out = unroll_loss(self.model, batch, self.frame_stack, self.config.mcts.lstm_horizon, self.loss_weights,
                              self.augment, t.mask_past_end)
        self.optimizer.zero_grad(set_to_none=True)
        (out.total / t.unroll_steps).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.step += 1
        return TrainStats(
            step=self.step,
            lr=lr,
            total_loss=float(out.total.detach()),
            value_prefix_loss=float(out.value_prefix.mean()),
            value_loss=float(out.value.mean()),
            policy_loss=float(out.policy.mean()),
            consistency_loss=float(out.consistency.mean()),
            grad_norm=float(grad_norm),
            priorities=out.priorities.float().cpu().numpy(),
        )
