import math

import torch

from speedy.losses import LossWeights, Predictions, loss_terms

EZ_WEIGHTS = LossWeights(value_prefix=1.0, value=0.25, policy=1.0, consistency=2.0)


def test_loss_on_tiny_batch_matches_hand_computation():
    # Support size 1 (3 bins), K = 1, A = 2, one sample, all logits zero (uniform predictions).
    pred = Predictions(
        value_logits=torch.zeros(1, 2, 3),
        policy_logits=torch.zeros(1, 2, 2),
        value_prefix_logits=torch.zeros(1, 1, 3),
        dynamic_projection=torch.tensor([[[1.0, 0.0]]]),
        target_projection=torch.tensor([[[1.0, 0.0]]]),
    )
    out = loss_terms(
        pred,
        target_value=torch.tensor([[1.0, 0.0]]),
        target_value_prefix=torch.tensor([[0.0]]),
        target_policy=torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]),
        mask=torch.ones(1, 2),
        weights=torch.tensor([1.0]),
        support_size=1,
        loss_weights=EZ_WEIGHTS,
    )
    # Cross-entropy of any distribution against uniform logits over n bins is log n.
    assert math.isclose(float(out.value[0]), 2 * math.log(3), rel_tol=1e-6)  # two steps
    assert math.isclose(float(out.value_prefix[0]), math.log(3), rel_tol=1e-6)
    assert math.isclose(float(out.policy[0]), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(out.consistency[0]), -1.0, rel_tol=1e-6)  # cosine 1, negated
    # total = 1·log3 + 0.25·2log3 + 1·2log2 + 2·(−1) = 1.03421…
    expected = math.log(3) + 0.5 * math.log(3) + 2 * math.log(2) - 2
    assert math.isclose(float(out.total), expected, rel_tol=1e-6)
    # priority |v̂ − z0| = |h⁻¹(0) − 1| = 1
    assert math.isclose(float(out.priorities[0]), 1.0, rel_tol=1e-6)


def test_masked_consistency_and_importance_weights():
    pred = Predictions(
        value_logits=torch.zeros(2, 2, 3),
        policy_logits=torch.zeros(2, 2, 2),
        value_prefix_logits=torch.zeros(2, 1, 3),
        dynamic_projection=torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]),
        target_projection=torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]),
    )
    out = loss_terms(pred, torch.zeros(2, 2), torch.zeros(2, 1), torch.zeros(2, 2, 2), torch.tensor(
        [[1.0, 1.0], [1.0, 0.0]]), torch.tensor([1.0, 0.5]), 1, EZ_WEIGHTS)
    assert float(out.consistency[0]) == 0.0  # orthogonal: cosine 0
    assert float(out.consistency[1]) == 0.0  # aligned (cosine 1) but masked past the episode end
    assert float(out.policy.sum()) == 0.0  # zero policy targets past the end contribute nothing
    per_sample = math.log(3) + 0.5 * math.log(3)  # value prefix + 0.25 · two value steps
    assert math.isclose(float(out.total), (1.0 + 0.5) * per_sample / 2, rel_tol=1e-6)
