"""One training step: loss, 1/K gradient scale, clipping, optimizer step, learning-rate schedule.

With `data_parallel`, the loss runs through `DistributedDataParallel` (the caller has joined the trainers' process
group, speedy/cluster/ddp.py): each trainer unrolls its own batch, backward averages the gradients over trainers, and
every trainer takes the same optimizer step, so their weights stay equal (DDP broadcasts rank 0's at the start).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from speedy.augment import build_augmentation, build_mirror
from speedy.config import Config
from speedy.losses import LossOutput, LossWeights, TrainingBatch, unroll_loss
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


@torch.no_grad()
def polyak_update(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average ← decay·average + (1 − decay)·model for parameters; buffers (norm statistics) are copied."""
    torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    for mine, theirs in zip(average.buffers(), model.buffers(), strict=True):
        mine.copy_(theirs)


class UnrollLoss(torch.nn.Module):
    """The unroll loss as a module, so that DDP sees the forward pass that its backward reduces."""

    def __init__(self, model: EfficientZeroNet, frame_stack: int, lstm_horizon: int, weights: LossWeights,
                 augment: object, mask_past_end: bool) -> None:
        super().__init__()
        self.model = model
        self.frame_stack, self.lstm_horizon, self.weights = frame_stack, lstm_horizon, weights
        self.augment, self.mask_past_end = augment, mask_past_end

    def forward(self, batch: TrainingBatch) -> LossOutput:
        return unroll_loss(self.model, batch, self.frame_stack, self.lstm_horizon, self.weights, self.augment,
                           self.mask_past_end)


class Learner:
    def __init__(self, model: EfficientZeroNet, config: Config, frame_stack: int, device: torch.device,
                 data_parallel: bool = False, rank: int = 0) -> None:
        """`data_parallel`: DDP over the trainers' process group (joined by the caller); `rank` seeds this
        trainer's augmentation apart from the others'."""
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
        self.augment = build_augmentation(t.augmentation, model.spec.observation_shape,
                                          config.run.seed + 31 + 1009 * rank, device)
        shape = model.spec.observation_shape  # stacked; one frame of a vector task is (D / frame_stack,)
        frame_shape = (shape[0] // frame_stack,) if len(shape) == 1 else shape
        self.mirror = build_mirror(t.mirror_signs, t.mirror_actions, frame_shape, model.spec.num_actions,
                                   config.run.seed + 37 + 1009 * rank, device)
        loss = UnrollLoss(model, frame_stack, config.mcts.lstm_horizon, self.loss_weights, self.augment,
                          t.mask_past_end)
        if data_parallel:
            ids = [device.index] if device.type == "cuda" and device.index is not None else None
            loss = torch.nn.parallel.DistributedDataParallel(loss, device_ids=ids)
        self.loss = loss
        self.step = 0
        self.acting_ema_decay = t.acting_ema_decay
        # The weights to act with: a Polyak average of `model` (its own copy) or `model` itself when the decay is 0.
        self.acting_model = copy.deepcopy(model).eval() if self.acting_ema_decay > 0 else model
        # The weights the evaluator plays (eval.ema_decay): an average of `model` of its own, else the acting ones.
        self.eval_ema_decay = config.eval.ema_decay
        self.eval_model = copy.deepcopy(model).eval() if self.eval_ema_decay > 0 else self.acting_model

    def reset_acting(self) -> None:
        """Restart the averages at the current weights (after loading weights into `model`)."""
        for average in (self.acting_model, self.eval_model):
            if average is not self.model:
                average.load_state_dict(self.model.state_dict())

    def update_acting(self) -> None:
        """Step both averages: acting (train.acting_ema_decay) and the evaluator's (eval.ema_decay)."""
        if self.acting_model is not self.model:
            polyak_update(self.acting_model, self.model, self.acting_ema_decay)
        if self.eval_model is not self.acting_model:
            polyak_update(self.eval_model, self.model, self.eval_ema_decay)

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
        if self.mirror is not None:
            frames, actions, policy = self.mirror.apply(self.mirror.draw(batch.actions.shape[0]), batch.frames,
                                                        batch.actions, batch.target_policy)
            batch = dataclasses.replace(batch, frames=frames, actions=actions, target_policy=policy)
        with self._autocast():
            out = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        (out.total / t.unroll_steps).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.update_acting()
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
