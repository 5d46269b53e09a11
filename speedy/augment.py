"""EfficientZero's augmentation of training observations, in torch on the training device.

Two transforms, each drawn once per sample and shared by all the frames of that sample (so a stack stays a
consistent picture):
- shift: pad each frame by `pad` pixels replicating its border, then crop back to H × W at a uniformly random offset
  in [0, 2·pad]², i.e. move the picture by −pad … pad pixels per axis (rows/columns clamped at the border);
- intensity: multiply by 1 + scale · clip(N(0, 1), −2, 2).

Small images (min(H, W) < 32, e.g. MinAtar's 10×10 grids; `speedy.obs.is_small_image`): "auto" leaves the shift
out. A 4-pixel shift moves a 10×10 grid by 40 %, and replicate padding copies border cells (a paddle in the bottom
row would appear twice); each cell is an object, not a blurred pixel. An explicit "shift" there moves by ±1 cell.

The trainer augments the frames behind the observation stack at t and, with fresh draws, those behind the
consistency-target stacks at t+1 … t+K (`speedy.losses.observation_stacks`).
"""

from __future__ import annotations

import torch

from speedy.config import AUGMENTATION_SETTINGS
from speedy.obs import is_small_image

KINDS = ("shift", "intensity")
SETTINGS = AUGMENTATION_SETTINGS
SHIFT_PAD = 4  # EfficientZero: ±4 pixels on 96×96 frames
SMALL_IMAGE_SHIFT_PAD = 1  # ±1 cell, where "shift" is asked for explicitly on a small image


def augmentation_kinds(setting: str, is_image: bool, small_image: bool = False) -> tuple[str, ...]:
    """`train.augmentation` → transforms to apply: 'auto' = shift and intensity for image tasks (intensity only for
    small images), none for vectors."""
    if setting not in SETTINGS:
        raise ValueError(f"train.augmentation = {setting!r}: expected one of {', '.join(SETTINGS)}")
    if setting == "auto":
        if not is_image:
            return ()
        return ("intensity",) if small_image else KINDS
    kinds = () if setting == "none" else tuple(setting.split("+"))
    if kinds and not is_image:
        raise ValueError(f"train.augmentation = {setting!r} needs image observations; this task's are vectors")
    return kinds


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch generator on `device` seeded with `seed` ("cuda" without an index: the current device, which a
    generator must name exactly)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """frames (B, T, C, H, W) → same shape and dtype, each sample moved by one random offset (replicate padding)."""
    B, T, C, H, W = frames.shape
    flat = frames.reshape(B, T * C, H, W)
    offsets = torch.randint(0, 2 * pad + 1, (2, B), generator=generator, device=frames.device)
    rows = (torch.arange(H, device=frames.device) + offsets[0, :, None] - pad).clamp(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=frames.device) + offsets[1, :, None] - pad).clamp(0, W - 1)  # (B, W)
    flat = flat.gather(2, rows[:, None, :, None].expand(B, T * C, H, W))
    flat = flat.gather(3, cols[:, None, None, :].expand(B, T * C, H, W))
    return flat.reshape(frames.shape)


def random_intensity(frames: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """frames (B, T, C, H, W) float → same shape and dtype, sample b scaled by 1 + scale · clip(N(0, 1), −2, 2)."""
    if not frames.is_floating_point():
        raise TypeError(f"intensity augmentation needs floating frames, got {frames.dtype}")
    noise = torch.randn(frames.shape[0], generator=generator, device=frames.device).clamp(-2.0, 2.0)
    factor = (1.0 + scale * noise).to(frames.dtype)
    return frames * factor.view(-1, *([1] * (frames.dim() - 1)))


class Augmentation:
    """Seeded augmentation on one device: `augment(frames)` with frames (B, T, C, H, W) → same shape and dtype."""

    def __init__(self, kinds: tuple[str, ...], seed: int, device: torch.device, pad: int = SHIFT_PAD,
                 intensity_scale: float = 0.05) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; known: {', '.join(KINDS)}")
        self.kinds, self.pad, self.intensity_scale = kinds, pad, intensity_scale
        self.generator = seeded_generator(seed, device)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if "shift" in self.kinds:
            frames = random_shift(frames, self.pad, self.generator)
        if "intensity" in self.kinds:
            frames = random_intensity(frames, self.intensity_scale, self.generator)
        return frames


def build_augmentation(setting: str, observation_shape: tuple[int, ...], seed: int,
                       device: torch.device) -> Augmentation | None:
    """The augmentation of `train.augmentation` for network inputs of `observation_shape` ((C·s, H, W) or (D,)),
    None when it applies no transform; the shift pad is `SHIFT_PAD`, or `SMALL_IMAGE_SHIFT_PAD` on small images."""
    small = is_small_image(observation_shape)
    kinds = augmentation_kinds(setting, len(observation_shape) == 3, small)
    if not kinds:
        return None
    return Augmentation(kinds, seed, device, pad=SMALL_IMAGE_SHIFT_PAD if small else SHIFT_PAD)


class Mirror:
    """A task's mirror symmetry as a training augmentation (vector tasks): each sample of a batch is mirrored with
    probability 1/2, the same way for all its frames and unroll steps. Mirroring multiplies every observation
    component by its sign (`signs`, (D,) of ±1), replaces every action a by `actions[a]` and permutes the policy
    targets alike (π'[actions[a]] = π[a]); values and rewards stay. CartPole: signs (−1, −1, −1, −1) (cart position
    and velocity, pole angle and angular velocity), actions (1, 0) (push left ↔ push right).

    Replay of a policy that drifts one way holds states on one side only, and the values learn the side, not the
    danger: a CartPole run whose agent always drifted left valued v(s) − v(−s) ≈ +50 … +150 along its own games
    (docs/benchmarks.md, ninth session)."""

    def __init__(self, signs: list[float], actions: list[int], seed: int, device: torch.device) -> None:
        self.generator = seeded_generator(seed, device)
        self.signs = torch.tensor(signs, dtype=torch.float32, device=self.generator.device)
        self.actions = torch.tensor(actions, dtype=torch.int64, device=self.generator.device)
        self.policy_order = torch.argsort(self.actions)  # π' = π[..., policy_order]: π'[actions[a]] = π[a]

    def draw(self, batch_size: int) -> torch.Tensor:
        """(B,) bool: which samples to mirror, each with probability 1/2."""
        return torch.rand(batch_size, generator=self.generator, device=self.signs.device) < 0.5

    def apply(self, flip: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor, policy: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mirror the samples where `flip` (B,) is true. frames (B, T, D) float, actions (B, K) int64, policy
        (B, K+1, A) float → the same shapes and dtypes; the inputs are not modified."""
        f = flip.view(-1, 1, 1)
        frames = torch.where(f, frames * self.signs.to(frames.dtype), frames)
        actions = torch.where(flip.view(-1, 1), self.actions[actions], actions)
        policy = torch.where(f, policy[..., self.policy_order], policy)
        return frames, actions, policy


def build_mirror(signs: list[float], actions: list[int], frame_shape: tuple[int, ...], num_actions: int,
                 seed: int, device: torch.device) -> Mirror | None:
    """`train.mirror_signs` / `train.mirror_actions` for a task whose frames (one observation before stacking) have
    `frame_shape` (D,) and which has `num_actions` actions: None when both are empty; ValueError naming the key
    when they do not fit the task."""
    if not signs and not actions:
        return None
    if len(frame_shape) != 1:
        raise ValueError(f"train.mirror_signs needs vector observations; this task's frames are {frame_shape}")
    if len(signs) != frame_shape[0]:
        raise ValueError(f"train.mirror_signs = {signs} has {len(signs)} signs; this task's observations have "
                         f"{frame_shape[0]} components")
    if len(actions) != num_actions:
        raise ValueError(f"train.mirror_actions = {actions} names {len(actions)} actions; this task has {num_actions}")
    return Mirror(signs, actions, seed, device)
