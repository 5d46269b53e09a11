import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from speedy.model.support import h_inverse, h_transform, scalar_to_support, support_to_scalar


def test_h_hand_values():
    # h(3) = sign(3)(√4 − 1) + 0.001·3 = 1.003 ; h(−8) = −(√9 − 1) − 0.008 = −2.008 ; h(0) = 0
    x = torch.tensor([3.0, -8.0, 0.0], dtype=torch.float64)
    assert torch.allclose(h_transform(x), torch.tensor([1.003, -2.008, 0.0], dtype=torch.float64))


@given(st.floats(-5000, 5000, allow_nan=False))
def test_h_inverse_round_trip(x):
    t = torch.tensor([x], dtype=torch.float64)
    assert math.isclose(float(h_inverse(h_transform(t))), x, rel_tol=1e-6, abs_tol=1e-6)


def test_two_hot_hand_values():
    # h(1) = √2 − 1 + 0.001 = 0.41521…: weight 0.58479 on bin 0 (index S) and 0.41521 on bin 1 (index S + 1)
    target = scalar_to_support(torch.tensor([1.0], dtype=torch.float64), 2)
    h1 = math.sqrt(2) - 1 + 0.001
    expected = torch.tensor([[0, 0, 1 - h1, h1, 0]], dtype=torch.float64)
    assert torch.allclose(target, expected)


@given(st.floats(-250, 250, allow_nan=False))
def test_support_projection_round_trip(x):
    probs = scalar_to_support(torch.tensor([x], dtype=torch.float64), 300)
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-9)
    # logits = log(probs) reproduce the distribution through softmax, so the expectation maps back to x
    logits = torch.log(probs.clamp_min(1e-300))
    assert math.isclose(float(support_to_scalar(logits, 300)), x, rel_tol=1e-6, abs_tol=1e-5)


def test_support_clips_out_of_range():
    probs = scalar_to_support(torch.tensor([1e9]), 3)
    assert float(probs[0, -1]) == 1.0


def test_untransformed_two_hot_hand_values():
    # "none": 1.25 is 0.75 on bin 1 and 0.25 on bin 2 of [−2, 2]; −0.5 is 0.5 on bins −1 and 0
    target = scalar_to_support(torch.tensor([1.25, -0.5], dtype=torch.float64), 2, "none")
    expected = torch.tensor([[0, 0, 0, 0.75, 0.25], [0, 0.5, 0.5, 0, 0]], dtype=torch.float64)
    assert torch.allclose(target, expected)


@given(st.floats(-300, 300, allow_nan=False))
def test_untransformed_support_round_trip(x):
    probs = scalar_to_support(torch.tensor([x], dtype=torch.float64), 300, "none")
    logits = torch.log(probs.clamp_min(1e-300))
    assert math.isclose(float(support_to_scalar(logits, 300, "none")), x, rel_tol=1e-6, abs_tol=1e-5)


def test_untransformed_support_separates_large_values_by_whole_bins():
    # values 200 and 210: 10 bins apart on the plain support, h(210) − h(200) ≈ 0.36 bins under h
    plain = scalar_to_support(torch.tensor([200.0, 210.0], dtype=torch.float64), 300, "none")
    assert int(plain[0].argmax()) + 10 == int(plain[1].argmax())
    squashed = scalar_to_support(torch.tensor([200.0, 210.0], dtype=torch.float64), 300)
    support = torch.arange(-300, 301, dtype=torch.float64)
    gap = float((squashed[1] * support).sum() - (squashed[0] * support).sum())
    assert math.isclose(gap, math.sqrt(211) - math.sqrt(201) + 0.01, rel_tol=1e-9)


def test_unknown_transform_is_refused():
    with pytest.raises(ValueError, match="'log'"):
        scalar_to_support(torch.tensor([1.0]), 3, "log")
