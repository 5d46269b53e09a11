import math

import torch

from speedy.optim import ClippedLARS, build_optimizer, learning_rate


def test_learning_rate_warmup_then_step_decay():
    # base 0.2, 10 warm-up steps, ×0.1 every 100 steps after warm-up
    assert math.isclose(learning_rate(0, 0.2, 10, 100, 0.1), 0.02)
    assert math.isclose(learning_rate(9, 0.2, 10, 100, 0.1), 0.2)
    assert math.isclose(learning_rate(109, 0.2, 10, 100, 0.1), 0.2)
    assert math.isclose(learning_rate(110, 0.2, 10, 100, 0.1), 0.02)
    assert math.isclose(learning_rate(5, 0.2, 0, 100, 0.1), 0.2)


def test_clipped_lars_layerwise_rate_by_hand():
    # w = [[3, 4]] (‖w‖ = 5), g = [[0, 1]] (‖g‖ = 1), η = 0.1, β = 0, clip 10:
    # trust = 0.1·5/1 = 0.5, step = lr·trust·g = 1·0.5·[0, 1] → w = [[3, 3.5]]. The bias (ndim 1) takes plain SGD.
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    opt = ClippedLARS([weight, bias], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1, clip=10.0, beta=0.0)
    weight.grad = torch.tensor([[0.0, 1.0]])
    bias.grad = torch.tensor([0.5])
    opt.step()
    assert torch.allclose(weight, torch.tensor([[3.0, 3.5]]))
    assert torch.allclose(bias, torch.tensor([0.5]))
    # clipping: with clip 0.2 the trust ratio 0.5 is capped at 0.2 → w = [[3, 3.3]]
    opt = ClippedLARS([weight], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1, clip=0.2, beta=0.0)
    weight.grad = torch.tensor([[0.0, 1.0]])
    opt.step()
    assert torch.allclose(weight, torch.tensor([[3.0, 3.3]]))


def test_build_optimizer_names():
    model = torch.nn.Linear(2, 2)
    assert isinstance(build_optimizer(model, "sgd", 0.1, 0.9, 1e-4), torch.optim.SGD)
    assert isinstance(build_optimizer(model, "adam", 0.1, 0.9, 1e-4), torch.optim.Adam)
    assert isinstance(build_optimizer(model, "lars", 0.1, 0.9, 1e-4), ClippedLARS)
