"""EfficientZero's loss: value prefix (1), value (0.25), policy (1), consistency (2); gradient scaled by 1/K.

`loss_terms` is the arithmetic on predictions and targets (tested against hand-computed numbers); `unroll_loss`
runs the model over a `TrainingBatch` (initial inference, K recurrent steps with the LSTM reset every horizon and
the gradient into each unrolled latent halved) and calls it.

Masks, as EfficientZero's: at unroll step k ≥ 1 the policy, value and value-prefix losses count where action k−1 was
a real transition (k ≤ valid steps: t+k is a real state or the episode's final state); the consistency loss counts
where t+k is a real state (k < valid steps), because the final observation is not stored (the env resets on the
step that ends an episode), so there is no target stack for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from speedy.model import EfficientZeroNet, scalar_to_support, support_to_scalar
from speedy.obs import merge_stack


@dataclass
class TrainingBatch:
    """One training batch on the training device (B = batch, K = unroll steps, s = frame stack, A = actions).

    frames: (B, s + K, *frame_shape) — observation stacks for t … t+K are the windows frames[:, k : k + s].
    """

    frames: torch.Tensor
    actions: torch.Tensor  # (B, K) int64
    target_value_prefix: torch.Tensor  # (B, K) float32
    target_value: torch.Tensor  # (B, K+1) float32
    target_policy: torch.Tensor  # (B, K+1, A) float32 (rows of zeros past the episode end)
    mask: torch.Tensor  # (B, K+1) float32, 1 where t+k is a real state
    weights: torch.Tensor  # (B,) float32 importance-sampling weights

    def to(self, device: torch.device) -> TrainingBatch:
        return TrainingBatch(**{name: value.to(device, non_blocking=True) for name, value in vars(self).items()})


@dataclass
class LossWeights:
    """Weights of the four losses; EfficientZero's values are the `train.*_loss_weight` defaults in config.py."""

    value_prefix: float
    value: float
    policy: float
    consistency: float


@dataclass
class Predictions:
    """Network outputs stacked over unroll steps."""

    value_logits: torch.Tensor  # (B, K+1, V)
    policy_logits: torch.Tensor  # (B, K+1, A)
    value_prefix_logits: torch.Tensor  # (B, K, V)
    dynamic_projection: torch.Tensor  # (B, K, P) prediction head on dynamics latents
    target_projection: torch.Tensor  # (B, K, P) projection of represented next observations (no gradient)


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar: Σ_b weight_b · loss_b / B, before the 1/K gradient scale
    value_prefix: torch.Tensor  # (B,) summed over unroll steps
    value: torch.Tensor  # (B,)
    policy: torch.Tensor  # (B,)
    consistency: torch.Tensor  # (B,)
    priorities: torch.Tensor  # (B,) |predicted value − target value| at step 0


def cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """−Σ target · log_softmax(logits) over the last axis."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(-1)


def loss_terms(
    pred: Predictions,
    target_value: torch.Tensor,
    target_value_prefix: torch.Tensor,
    target_policy: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    support_size: int,
    loss_weights: LossWeights,
    mask_past_end: bool = True,
    value_transform: str = "h",
) -> LossOutput:
    """The four losses per sample (B,), summed over unroll steps, and the weighted total (module docstring: weights
    and masks). mask (B, K+1): 1 where t+k is a real state; weights (B,) importance-sampling weights."""
    acted = torch.cat([torch.ones_like(mask[:, :1]), mask[:, :-1]], 1)  # (B, K+1): 1 where k ≤ valid steps
    if not mask_past_end:  # value → 0 and value prefix → constant past the end (policy targets there are 0 anyway)
        acted = torch.ones_like(acted)
    value_target = scalar_to_support(target_value, support_size, value_transform)
    value_prefix_target = scalar_to_support(target_value_prefix, support_size, value_transform)
    value = (cross_entropy(pred.value_logits, value_target) * acted).sum(1)
    value_prefix = (cross_entropy(pred.value_prefix_logits, value_prefix_target) * acted[:, 1:]).sum(1)
    policy = (cross_entropy(pred.policy_logits, target_policy) * acted).sum(1)
    cosine = F.cosine_similarity(pred.dynamic_projection, pred.target_projection, dim=-1, eps=1e-5)
    consistency = -(cosine * mask[:, 1:]).sum(1)
    per_sample = (
        loss_weights.value_prefix * value_prefix
        + loss_weights.value * value
        + loss_weights.policy * policy
        + loss_weights.consistency * consistency
    )
    total = (weights * per_sample).mean()
    predicted_value = support_to_scalar(pred.value_logits[:, 0].detach(), support_size, value_transform)
    priorities = (predicted_value - target_value[:, 0]).abs()
    return LossOutput(total, value_prefix.detach(), value.detach(), policy.detach(), consistency.detach(), priorities)


def _halve_gradient(latent: torch.Tensor) -> None:
    """Gradient × 0.5 into `latent` from everything that reads it (EfficientZero's hook on each unrolled latent:
    that step's heads and projection as well as the next dynamics step). No-op without autograd."""
    if latent.requires_grad:
        latent.register_hook(lambda grad: grad * 0.5)


Augment = Callable[[torch.Tensor], torch.Tensor]


def observation_stacks(batch: TrainingBatch, frame_stack: int, augment: Augment | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The stack at t, (B, s·C, H, W) or (B, s·D), and the consistency-target stacks at t+1 … t+K, (K·B, …)
    k-major. With `augment` (frames (B, T, …) float → same), the frames t−s+1 … t behind the first and the frames
    t−s+2 … t+K behind the targets are augmented independently, as EfficientZero does."""
    s, K = frame_stack, batch.actions.shape[1]
    first, later = batch.frames[:, :s], batch.frames[:, 1:]
    if augment is not None:
        first, later = augment(first.float()), augment(later.float())
    return merge_stack(first), torch.cat([merge_stack(later[:, k : k + s]) for k in range(K)])


def unroll(model: EfficientZeroNet, batch: TrainingBatch, frame_stack: int, lstm_horizon: int,
           augment: Augment | None = None) -> Predictions:
    """Run initial inference at t and K recurrent steps; project next observations for the consistency loss."""
    K = batch.actions.shape[1]
    obs, next_obs = observation_stacks(batch, frame_stack, augment)
    first = model.initial_inference(obs)
    value_logits, policy_logits = [first.value_logits], [first.policy_logits]
    prefix_logits, dynamic_proj, target_proj = [], [], []
    latent, state = first.latent, first.lstm_state
    with torch.no_grad():
        next_latents = model.initial_inference(next_obs).latent
        targets = model.project(next_latents, with_grad=False).view(K, -1, model.spec.proj_out)
    for k in range(1, K + 1):
        out = model.recurrent_inference(latent, state, batch.actions[:, k - 1])
        _halve_gradient(out.latent)
        value_logits.append(out.value_logits)
        policy_logits.append(out.policy_logits)
        prefix_logits.append(out.value_prefix_logits)
        dynamic_proj.append(model.project(out.latent, with_grad=True))
        target_proj.append(targets[k - 1])
        latent, state = out.latent, out.lstm_state
        if k % lstm_horizon == 0:
            state = (torch.zeros_like(state[0]), torch.zeros_like(state[1]))
    return Predictions(
        value_logits=torch.stack(value_logits, 1),
        policy_logits=torch.stack(policy_logits, 1),
        value_prefix_logits=torch.stack(prefix_logits, 1),
        dynamic_projection=torch.stack(dynamic_proj, 1),
        target_projection=torch.stack(target_proj, 1),
    )


def unroll_loss(
    model: EfficientZeroNet, batch: TrainingBatch, frame_stack: int, lstm_horizon: int, loss_weights: LossWeights,
    augment: Augment | None = None, mask_past_end: bool = True,
) -> LossOutput:
    """`unroll` then `loss_terms` on the batch's targets."""
    pred = unroll(model, batch, frame_stack, lstm_horizon, augment)
    return loss_terms(
        pred,
        batch.target_value,
        batch.target_value_prefix,
        batch.target_policy,
        batch.mask,
        batch.weights,
        model.spec.support_size,
        loss_weights,
        mask_past_end,
        model.spec.value_transform,
    )
