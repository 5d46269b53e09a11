import pytest
import torch
from torch.nn import functional as F

from speedy.augment import Augmentation, augmentation_kinds, random_intensity, random_shift
from speedy.losses import TrainingBatch, observation_stacks


def frames(B: int = 6, T: int = 3, C: int = 3, H: int = 12, W: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (B, T, C, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_settings_resolve_by_task_kind():
    assert augmentation_kinds("auto", is_image=True) == ("shift", "intensity")
    assert augmentation_kinds("auto", is_image=False) == ()
    assert augmentation_kinds("none", is_image=True) == ()
    assert augmentation_kinds("shift", is_image=True) == ("shift",)
    with pytest.raises(ValueError, match="vectors"):
        augmentation_kinds("shift", is_image=False)


def test_shapes_and_dtypes_are_kept():
    x = frames()
    augment = Augmentation(("shift", "intensity"), seed=0, device=torch.device("cpu"))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        out = augment(x.to(dtype))
        assert out.shape == x.shape and out.dtype == dtype
    shifted = random_shift(x, 4, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and shifted.dtype == torch.uint8
    with pytest.raises(TypeError, match="floating"):
        random_intensity(x, 0.05, torch.Generator())


def test_shift_is_a_crop_of_the_replicate_padded_frames_shared_by_the_stack():
    x = frames(B=8).float()
    out = random_shift(x, 4, torch.Generator().manual_seed(3))
    padded = F.pad(x.reshape(8, -1, 12, 10), (4, 4, 4, 4), mode="replicate").reshape(8, 3, 3, 20, 18)
    for b in range(8):
        crops = [(dy, dx) for dy in range(9) for dx in range(9)
                 if torch.equal(out[b], padded[b, :, :, dy : dy + 12, dx : dx + 10])]
        assert crops, f"sample {b} is no crop of its padded frames"
    assert not torch.equal(out, x)


def test_intensity_scales_each_sample_by_one_factor_within_ten_percent():
    x = frames(B=64).float() + 1.0
    ratio = random_intensity(x, 0.05, torch.Generator().manual_seed(1)) / x
    per_sample = ratio.reshape(64, -1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample.min() >= 0.9 - 1e-6 and per_sample.max() <= 1.1 + 1e-6 and per_sample.std() > 0


def batch_of(x: torch.Tensor, K: int) -> TrainingBatch:
    B = x.shape[0]
    return TrainingBatch(frames=x, actions=torch.zeros(B, K, dtype=torch.int64), target_value_prefix=torch.zeros(B, K),
                         target_value=torch.zeros(B, K + 1), target_policy=torch.zeros(B, K + 1, 2),
                         mask=torch.ones(B, K + 1), weights=torch.ones(B))


def test_identity_when_off():
    x = frames(T=2 + 3)
    obs, targets = observation_stacks(batch_of(x, K=3), frame_stack=2)
    assert torch.equal(obs, x[:, :2].reshape(6, 6, 12, 10))
    assert torch.equal(targets, torch.cat([x[:, k : k + 2].reshape(6, 6, 12, 10) for k in (1, 2, 3)]))


def test_observation_and_target_stacks_are_augmented_independently():
    x = frames(T=2 + 3)
    augment = Augmentation(("shift", "intensity"), seed=0, device=torch.device("cpu"))
    obs, targets = observation_stacks(batch_of(x, K=3), 2, augment)
    assert obs.dtype == torch.float32 and obs.shape == (6, 6, 12, 10) and targets.shape == (18, 6, 12, 10)
    # frame t is in the stack at t and in the target stack at t+1: the two copies were transformed differently
    assert not torch.allclose(obs[:, 3:], targets[:6, :3])
    # within the targets, one draw per sample: frame t+1 is the same in the stacks at t+1 and t+2
    torch.testing.assert_close(targets[:6, 3:], targets[6:12, :3])


def test_reproducible_under_a_seed():
    x = frames().float()
    a = Augmentation(("shift", "intensity"), seed=5, device=torch.device("cpu"))
    b = Augmentation(("shift", "intensity"), seed=5, device=torch.device("cpu"))
    c = Augmentation(("shift", "intensity"), seed=6, device=torch.device("cpu"))
    first = a(x)
    assert torch.equal(first, b(x)) and not torch.equal(first, c(x))
    assert not torch.equal(a(x), first)  # the next batch draws afresh
