import math
from types import SimpleNamespace

import torch

from speedy.losses import LossWeights, Predictions, TrainingBatch, loss_terms, unroll

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


def test_policy_value_and_value_prefix_are_masked_past_the_episode_end():
    # K = 2, one sample with valid_steps = 1: t is real, t+1 is the final state, t+2 lies past the end.
    # mask (real states) = [1, 0, 0]; policy/value/value prefix count at k ≤ valid = {0, 1}; consistency at none.
    pred = Predictions(
        value_logits=torch.zeros(1, 3, 3),
        policy_logits=torch.zeros(1, 3, 2),
        value_prefix_logits=torch.zeros(1, 2, 3),
        dynamic_projection=torch.ones(1, 2, 2),
        target_projection=torch.ones(1, 2, 2),
    )
    out = loss_terms(pred, torch.zeros(1, 3), torch.zeros(1, 2), torch.tensor([[[1.0, 0.0]] * 3]),
                     torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1.0]), 1, EZ_WEIGHTS)
    assert math.isclose(float(out.value[0]), 2 * math.log(3), rel_tol=1e-6)  # steps 0 and 1, not 2
    assert math.isclose(float(out.value_prefix[0]), math.log(3), rel_tol=1e-6)  # step 1 only
    assert math.isclose(float(out.policy[0]), 2 * math.log(2), rel_tol=1e-6)  # steps 0 and 1
    assert float(out.consistency[0]) == 0.0  # no stored observation at the final state
    expected = math.log(3) + 0.25 * 2 * math.log(3) + 2 * math.log(2)
    assert math.isclose(float(out.total), expected, rel_tol=1e-6)
    # train.mask_past_end = false: every step counts for value and value prefix (and policy, whose targets are 0
    # past the end in real batches); consistency keeps its real-state mask
    unmasked = loss_terms(pred, torch.zeros(1, 3), torch.zeros(1, 2), torch.tensor([[[1.0, 0.0]] * 3]),
                          torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1.0]), 1, EZ_WEIGHTS, mask_past_end=False)
    assert math.isclose(float(unmasked.value[0]), 3 * math.log(3), rel_tol=1e-6)
    assert math.isclose(float(unmasked.value_prefix[0]), 2 * math.log(3), rel_tol=1e-6)
    assert float(unmasked.consistency[0]) == 0.0


class ToyModel(torch.nn.Module):
    """latent_0 = w · obs, identity dynamics; every head and the projection read the latent as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.spec = SimpleNamespace(proj_out=1)

    def _out(self, latent: torch.Tensor, state: tuple) -> SimpleNamespace:
        return SimpleNamespace(latent=latent, lstm_state=state, value_logits=latent, policy_logits=latent,
                               value_prefix_logits=latent)

    def initial_inference(self, obs: torch.Tensor) -> SimpleNamespace:
        return self._out(self.w * obs, (torch.zeros(1, obs.shape[0], 1), torch.zeros(1, obs.shape[0], 1)))

    def recurrent_inference(self, latent: torch.Tensor, state: tuple, action: torch.Tensor) -> SimpleNamespace:
        return self._out(latent * 1.0, state)

    def project(self, latent: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
        return latent if with_grad else latent.detach()


def _toy_gradient(read) -> float:
    model = ToyModel()
    batch = TrainingBatch(frames=torch.ones(1, 3, 1), actions=torch.zeros(1, 2, dtype=torch.int64),
                          target_value_prefix=torch.zeros(1, 2), target_value=torch.zeros(1, 3),
                          target_policy=torch.zeros(1, 3, 1), mask=torch.ones(1, 3), weights=torch.ones(1))
    read(unroll(model, batch, frame_stack=1, lstm_horizon=5)).backward()
    return float(model.w.grad)


def test_latent_gradient_is_halved_at_each_unrolled_step_as_efficientzero():
    # K = 2, obs = 1. Each unrolled latent's gradient is × 0.5, whoever reads it (EfficientZero's hook):
    # value heads at steps 0, 1, 2 → 1 + 0.5 · (1 + 0.5 · 1) = 1.75 (halving only what flows on would give 2.5).
    assert math.isclose(_toy_gradient(lambda p: p.value_logits.sum()), 1.75)
    # the projection read at step 1 is halved too: 0.5 (not 1); at step 2: 0.25
    assert math.isclose(_toy_gradient(lambda p: p.dynamic_projection[:, 0].sum()), 0.5)
    assert math.isclose(_toy_gradient(lambda p: p.dynamic_projection[:, 1].sum()), 0.25)
    # and the value prefix of step 2: 0.25
    assert math.isclose(_toy_gradient(lambda p: p.value_prefix_logits[:, 1].sum()), 0.25)
