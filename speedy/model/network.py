"""The EfficientZero network: representation, dynamics with value-prefix LSTM, prediction, SimSiam heads.

Two bodies share one interface: `ConvBody` for images (Atari, DESIGN.md §3: stem to 64×6×6, one residual block per
function; small images such as MinAtar's 10×10 without the downsampling stem) and `MlpBody` for vector observations
(CartPole). Shapes, with B = batch, A = actions, L = LSTM width,
V = 2·support_size + 1 bins:

- `initial_inference(obs)`: obs (B, C·stack, H, W) uint8 or (B, stack·D) float → `InferenceOutput` with
  value (B,), value_prefix (B,) zeros, policy_logits (B, A), latent (B, *latent_shape), lstm state 2×(1, B, L) zeros.
- `recurrent_inference(latent, lstm_state, action)`: action (B,) int64 → the next latent, its value prefix and the
  new LSTM state. Resetting the LSTM state every `lstm_horizon` steps is the caller's job (search and unroll).
- `project(latent, with_grad)`: SimSiam projection (and prediction head when `with_grad`) for the consistency loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from speedy.model.support import support_to_scalar


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to build a network; derived from the run config and the environment."""

    observation_shape: tuple[int, ...]  # stacked input: (C·stack, H, W) for images or (stack·D,) for vectors
    num_actions: int
    support_size: int = 300
    value_transform: str = "h"  # what the value and value-prefix supports are over: "h" (EfficientZero) or "none"
    channels: int = 64
    reduced_channels: int = 16
    lstm_hidden: int = 512
    norm: str = "batch"  # 1-D norms (MLPs, after the value-prefix LSTM): "batch" (EfficientZero) or "layer"
    head_hidden: tuple[int, ...] = (32,)
    proj_hidden: int = 1024
    proj_out: int = 1024
    pred_hidden: int = 512
    mlp_latent: int = 128  # vector observations only
    mlp_hidden: tuple[int, ...] = (128,)  # vector observations only
    downsample: bool = True  # images only: EfficientZero's 16× stem (True) or a stride-1 conv keeping H × W
    input_norm: bool = True  # vectors only: norm after the representation MLP's first linear layer
    obs_scale: tuple[float, ...] = ()  # vectors only: per-component input multipliers (one per stacked component)
    one_hot_actions: bool = False  # images only: the action as A one-hot planes (True) or one plane a / A

    @property
    def is_image(self) -> bool:
        return len(self.observation_shape) == 3


@dataclass
class InferenceOutput:
    value: torch.Tensor  # (B,) scalar value in return units
    value_prefix: torch.Tensor  # (B,) scalar value prefix in reward units
    policy_logits: torch.Tensor  # (B, A)
    latent: torch.Tensor  # (B, *latent_shape)
    lstm_state: tuple[torch.Tensor, torch.Tensor]  # (h, c), each (1, B, L)
    value_logits: torch.Tensor  # (B, V)
    value_prefix_logits: torch.Tensor | None  # (B, V); None for initial inference


NORMS = ("batch", "layer")


def norm_1d(kind: str, features: int) -> nn.Module:
    """Normalisation of (B, features) activations: "batch" = BatchNorm1d (EfficientZero), "layer" = LayerNorm.

    BatchNorm trains on one unroll step's batch at a time but searches with running statistics pooled over all
    steps; where a quantity depends on the step (CartPole's value prefix is the step count) search then sees the
    pooled mean. LayerNorm normalises each sample alone, so search computes exactly what training fitted.
    """
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.LayerNorm(features)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


def mlp(sizes: list[int], norm: str = "batch", final_norm: bool = False, zero_last: bool = False,
        first_norm: bool = True) -> nn.Sequential:
    """Linear layers with norm+ReLU between them (EfficientZero's head MLP); `sizes` = [in, hidden..., out].
    `first_norm=False` leaves the first hidden layer unnormalised (Linear → ReLU)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [norm_1d(norm, sizes[i + 1]), nn.ReLU()] if i > 0 or first_norm else [nn.ReLU()]
        elif final_norm:
            layers.append(norm_1d(norm, sizes[i + 1]))
    if zero_last:
        last = layers[-2] if final_norm else layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """3×3 conv → BN → ReLU → 3×3 conv → BN, plus the input (strided 3×3 projection when shape changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skip = None
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.skip is None else self.skip(x)))


class ConvBody(nn.Module):
    """Image body: (B, C·stack, H, W) uint8 (or float in 0…255) → latent (B, c, h, w), c = `spec.channels`.

    With `spec.downsample` (Atari): EfficientZero's stem, h = ⌈H/16⌉ (96 → 6). Without (small images): a 3×3 conv,
    BatchNorm and ReLU at stride 1, as EfficientZero's code when `downsample` is off: h, w = H, W.
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        c = spec.channels
        in_channels = spec.observation_shape[0]
        if spec.downsample:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c // 2, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(),
                ResidualBlock(c // 2, c // 2),
                ResidualBlock(c // 2, c, stride=2),
                ResidualBlock(c, c),
                nn.AvgPool2d(3, 2, 1),
                ResidualBlock(c, c),
                nn.AvgPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.representation_block = ResidualBlock(c, c)
        self.one_hot_actions = spec.one_hot_actions
        action_planes = spec.num_actions if spec.one_hot_actions else 1
        self.dynamics_conv = nn.Conv2d(c + action_planes, c, 3, 1, 1, bias=False)
        self.dynamics_bn = nn.BatchNorm2d(c)
        self.dynamics_block = ResidualBlock(c, c)
        self.prediction_block = ResidualBlock(c, c)
        self.num_actions = spec.num_actions
        height, width = (_stem_side(side) if spec.downsample else side for side in spec.observation_shape[1:])
        self.latent_shape = (c, height, width)
        self.reward_in = nn.Sequential(nn.Conv2d(c, spec.reduced_channels, 1), nn.BatchNorm2d(spec.reduced_channels),
                                       nn.ReLU(), nn.Flatten())
        self.value_in = nn.Sequential(nn.Conv2d(c, spec.reduced_channels, 1), nn.BatchNorm2d(spec.reduced_channels),
                                      nn.ReLU(), nn.Flatten())
        self.policy_in = nn.Sequential(nn.Conv2d(c, spec.reduced_channels, 1), nn.BatchNorm2d(spec.reduced_channels),
                                       nn.ReLU(), nn.Flatten())
        self.head_in_features = spec.reduced_channels * height * width

    def represent(self, obs: torch.Tensor) -> torch.Tensor:
        return self.representation_block(self.stem(obs.float() / 255.0))

    def dynamics(self, latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.one_hot_actions:  # (B, A, h, w): plane a is 1 where the action is a
            code = F.one_hot(action.long(), self.num_actions).to(latent.dtype)
        else:  # (B, 1, h, w): EfficientZero's a / A
            code = (action.to(latent.dtype) / self.num_actions).view(-1, 1)
        planes = code.view(*code.shape, 1, 1).expand(-1, -1, *latent.shape[2:])
        x = self.dynamics_bn(self.dynamics_conv(torch.cat([latent, planes], dim=1)))
        return self.dynamics_block(F.relu(x + latent))

    def prediction_features(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prediction_block(latent)
        return self.value_in(x), self.policy_in(x)


def _stem_side(side: int) -> int:
    """Spatial side after the stem: conv s2, block s2, avgpool s2, avgpool s2 (each ceil(side / 2))."""
    for _ in range(4):
        side = (side + 1) // 2
    return side


class MlpBody(nn.Module):
    """Vector body: (B, stack·D) float → latent (B, mlp_latent), min–max normalised to [0, 1] per sample."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        latent = spec.mlp_latent
        hidden = list(spec.mlp_hidden)
        self.num_actions = spec.num_actions
        self.latent_shape = (latent,)
        self.representation = mlp([spec.observation_shape[0], *hidden, latent], spec.norm, first_norm=spec.input_norm)
        if spec.obs_scale and len(spec.obs_scale) != spec.observation_shape[0]:
            raise ValueError(f"obs_scale has {len(spec.obs_scale)} multipliers for an input of "
                             f"{spec.observation_shape[0]} components")
        # Derived from the config, so not saved with the weights (checkpoints without it still load); None = no
        # multiplication at all.
        self.register_buffer("obs_scale", torch.tensor(spec.obs_scale, dtype=torch.float32) if spec.obs_scale
                             else None, persistent=False)
        self.dynamics_net = mlp([latent + spec.num_actions, *hidden, latent], spec.norm)
        self.reward_in = nn.Identity()
        self.value_in = nn.Identity()
        self.policy_in = nn.Identity()
        self.head_in_features = latent

    @staticmethod
    def _normalize(x: torch.Tensor) -> torch.Tensor:
        low = x.min(dim=1, keepdim=True).values
        high = x.max(dim=1, keepdim=True).values
        return (x - low) / (high - low).clamp(min=1e-5)

    def represent(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.float() if self.obs_scale is None else obs.float() * self.obs_scale
        return self._normalize(self.representation(obs))

    def dynamics(self, latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(action.long(), self.num_actions).float()
        return self._normalize(self.dynamics_net(torch.cat([latent, one_hot], dim=1)))

    def prediction_features(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return latent, latent


class EfficientZeroNet(nn.Module):
    """Representation, dynamics (+ value-prefix LSTM), prediction and SimSiam heads around a conv or MLP body."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.body: ConvBody | MlpBody = ConvBody(spec) if spec.is_image else MlpBody(spec)
        bins = 2 * spec.support_size + 1
        features = self.body.head_in_features
        self.lstm = nn.LSTM(features, spec.lstm_hidden)
        self.value_prefix_norm = norm_1d(spec.norm, spec.lstm_hidden)
        self.value_prefix_head = mlp([spec.lstm_hidden, *spec.head_hidden, bins], spec.norm, zero_last=True)
        self.value_head = mlp([features, *spec.head_hidden, bins], spec.norm, zero_last=True)
        self.policy_head = mlp([features, *spec.head_hidden, spec.num_actions], spec.norm, zero_last=True)
        latent_size = int(torch.Size(self.body.latent_shape).numel())
        self.projection = mlp([latent_size, spec.proj_hidden, spec.proj_hidden, spec.proj_out], spec.norm,
                              final_norm=True)
        self.projection_head = mlp([spec.proj_out, spec.pred_hidden, spec.proj_out], spec.norm)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.body.latent_shape

    def initial_lstm_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(1, batch, self.spec.lstm_hidden, device=device)
        return zeros, zeros.clone()

    def _predict(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        value_features, policy_features = self.body.prediction_features(latent)
        value_logits = self.value_head(value_features)
        policy_logits = self.policy_head(policy_features)
        value = support_to_scalar(value_logits, self.spec.support_size, self.spec.value_transform)
        return value_logits, policy_logits, value

    def initial_inference(self, obs: torch.Tensor) -> InferenceOutput:
        latent = self.body.represent(obs)
        value_logits, policy_logits, value = self._predict(latent)
        batch = obs.shape[0]
        return InferenceOutput(
            value=value,
            value_prefix=torch.zeros(batch, device=obs.device),
            policy_logits=policy_logits,
            latent=latent,
            lstm_state=self.initial_lstm_state(batch, obs.device),
            value_logits=value_logits,
            value_prefix_logits=None,
        )

    def recurrent_inference(
        self, latent: torch.Tensor, lstm_state: tuple[torch.Tensor, torch.Tensor], action: torch.Tensor
    ) -> InferenceOutput:
        next_latent = self.body.dynamics(latent, action)
        reward_features = self.body.reward_in(next_latent)
        lstm_out, new_state = self.lstm(reward_features.unsqueeze(0), lstm_state)
        prefix_logits = self.value_prefix_head(F.relu(self.value_prefix_norm(lstm_out.squeeze(0))))
        value_logits, policy_logits, value = self._predict(next_latent)
        return InferenceOutput(
            value=value,
            value_prefix=support_to_scalar(prefix_logits, self.spec.support_size, self.spec.value_transform),
            policy_logits=policy_logits,
            latent=next_latent,
            lstm_state=new_state,
            value_logits=value_logits,
            value_prefix_logits=prefix_logits,
        )

    def project(self, latent: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
        """SimSiam: (B, *latent_shape) → (B, proj_out); the target branch (with_grad=False) is detached."""
        projected = self.projection(latent.reshape(latent.shape[0], -1))
        if with_grad:
            return self.projection_head(projected)
        return projected.detach()
