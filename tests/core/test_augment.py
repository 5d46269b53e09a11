import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from speedy.augment import Augmentation, Mirror, augmentation_kinds, build_mirror, random_intensity, random_shift
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


def _mirror(signs=(-1.0, -1.0, -1.0, -1.0), actions=(1, 0), seed: int = 0) -> Mirror:
    return Mirror(list(signs), list(actions), seed, torch.device("cpu"))


def test_mirror_flips_the_chosen_samples_by_hand():
    """CartPole's mirror: sample 0 mirrored (every component negated, push left ↔ push right, policy columns
    swapped), sample 1 kept; the inputs are not modified."""
    frames = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]],
                           [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]])
    actions = torch.tensor([[0], [1]])
    policy = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.2, 0.8], [0.6, 0.4]]])
    copies = frames.clone(), actions.clone(), policy.clone()
    out_frames, out_actions, out_policy = _mirror().apply(torch.tensor([True, False]), frames, actions, policy)
    assert torch.equal(out_frames[0], -frames[0]) and torch.equal(out_frames[1], frames[1])
    assert out_actions.tolist() == [[1], [1]]
    assert torch.equal(out_policy, torch.tensor([[[0.1, 0.9], [0.7, 0.3]], [[0.2, 0.8], [0.6, 0.4]]]))
    assert all(torch.equal(a, b) for a, b in zip((frames, actions, policy), copies, strict=True))


def test_mirror_signs_and_action_map_of_a_three_action_task():
    """signs keep the components a mirror does not move; actions (2, 1, 0): π'[actions[a]] = π[a]."""
    mirror = _mirror(signs=(1.0, -1.0), actions=(2, 1, 0))
    frames, actions = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[0, 1, 2]])
    policy = torch.tensor([[[0.5, 0.3, 0.2]]])
    out_frames, out_actions, out_policy = mirror.apply(torch.tensor([True]), frames, actions, policy)
    assert out_frames.tolist() == [[[3.0, -4.0]]]
    assert out_actions.tolist() == [[2, 1, 0]]
    assert torch.equal(out_policy, torch.tensor([[[0.2, 0.3, 0.5]]]))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.sampled_from([(1, 0), (0, 1), (2, 1, 0), (1, 0, 3, 2), (0, 2, 1, 3)]),
       st.integers(0, 2**31 - 1))
def test_mirroring_twice_gives_back_the_batch(batch, unroll, actions_map, seed):
    g = torch.Generator().manual_seed(seed)
    A = len(actions_map)
    frames = torch.randn(batch, unroll + 1, 3, generator=g)
    actions = torch.randint(0, A, (batch, unroll), generator=g)
    policy = torch.softmax(torch.randn(batch, unroll + 1, A, generator=g), -1)
    signs = [float(s) for s in (torch.randint(0, 2, (3,), generator=g) * 2 - 1)]
    mirror = Mirror(signs, list(actions_map), seed, torch.device("cpu"))
    flip = mirror.draw(batch)
    once = mirror.apply(flip, frames, actions, policy)
    assert torch.allclose(once[2].sum(-1), policy.sum(-1))  # still distributions
    twice = mirror.apply(flip, *once)
    assert all(torch.equal(a, b) for a, b in zip(twice, (frames, actions, policy), strict=True))


def test_mirror_draws_half_the_samples_reproducibly():
    draws = _mirror(seed=3).draw(4000)
    assert 0.45 < draws.float().mean() < 0.55
    assert torch.equal(draws, _mirror(seed=3).draw(4000))
    assert not torch.equal(draws, _mirror(seed=4).draw(4000))


def test_build_mirror_checks_the_task():
    cpu = torch.device("cpu")
    assert build_mirror([], [], (4,), 2, 0, cpu) is None
    assert isinstance(build_mirror([-1, -1, -1, -1], [1, 0], (4,), 2, 0, cpu), Mirror)
    with pytest.raises(ValueError, match=r"train.mirror_signs .* 4 components"):
        build_mirror([-1, -1], [1, 0], (4,), 2, 0, cpu)
    with pytest.raises(ValueError, match="train.mirror_actions .* this task has 3"):
        build_mirror([-1, -1, -1, -1], [1, 0], (4,), 3, 0, cpu)
    with pytest.raises(ValueError, match="vector observations"):
        build_mirror([-1], [1, 0], (4, 10, 10), 2, 0, cpu)
