"""DDP trainers: two spawned processes in a gloo group train exactly as one learner on both their batches."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from speedy.cluster.ddp import backend_for, free_port, join_trainer_group
from speedy.components import build_model, task_spec
from speedy.config import build_config
from speedy.learner import Learner
from speedy.losses import TrainingBatch

# CartPole's preset uses LayerNorm (no batch statistics), so averaging two half-batch gradients equals the gradient
# of the whole batch: the DDP pair must end where one learner on the concatenated batches ends.
OVERRIDES = ["model.mlp_latent=16", "model.mlp_hidden=[16]", "model.head_hidden=[8]", "model.lstm_hidden=8",
             "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.support_size=5"]
STEPS, B, K = 3, 8, 5


def random_batch(seed: int) -> TrainingBatch:
    g = torch.Generator().manual_seed(seed)
    policy = torch.rand(B, K + 1, 2, generator=g)
    return TrainingBatch(frames=torch.randn(B, K + 1, 4, generator=g), actions=torch.randint(0, 2, (B, K), generator=g),
                         target_value_prefix=torch.rand(B, K, generator=g) * 3,
                         target_value=torch.rand(B, K + 1, generator=g) * 10,
                         target_policy=policy / policy.sum(-1, keepdim=True), mask=torch.ones(B, K + 1),
                         weights=torch.rand(B, generator=g) + 0.5)


def concatenated(a: TrainingBatch, b: TrainingBatch) -> TrainingBatch:
    """Both batches as one: a batch's loss is Σ w·loss / B, so the mean of two B-batch gradients (DDP) is the
    gradient of their 2B concatenation."""
    return TrainingBatch(**{k: torch.cat([getattr(a, k), getattr(b, k)]) for k in vars(a)})


def learner(rank: int, data_parallel: bool) -> Learner:
    config = build_config("cartpole", overrides=OVERRIDES)
    torch.manual_seed(0)
    model = build_model(config, task_spec(config), torch.device("cpu"))
    return Learner(model, config, 1, torch.device("cpu"), data_parallel=data_parallel, rank=rank)


def ddp_trainer(rank: int, port: int, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    group = join_trainer_group(rank, 2, port, torch.device("cpu"), timeout_s=60)
    try:
        learn = learner(rank, data_parallel=True)
        for step in range(STEPS):
            assert group.agree(True)
            stats = learn.train_step(random_batch(100 * step + rank))
        assert not group.agree(rank == 0)  # one trainer stopping stops both
        # numpy, not tensors: torch would share a tensor's storage with a process that is about to exit
        out.put((rank, stats.grad_norm, {k: v.numpy().copy() for k, v in learn.model.state_dict().items()}))
    finally:
        group.close()


@pytest.mark.timeout(120)
def test_two_ddp_trainers_equal_one_learner_on_both_batches():
    context = mp.get_context("spawn")
    out = context.Queue()
    port = free_port()
    procs = [context.Process(target=ddp_trainer, args=(rank, port, out)) for rank in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (g, s)) for r, g, s in (out.get(timeout=90) for _ in procs))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    single = learner(0, data_parallel=False)
    for step in range(STEPS):
        stats = single.train_step(concatenated(random_batch(100 * step), random_batch(100 * step + 1)))
    (norm0, weights0), (norm1, weights1) = results[0], results[1]
    assert norm0 == pytest.approx(norm1, rel=1e-6)  # the gradients were averaged before clipping
    assert norm0 == pytest.approx(stats.grad_norm, rel=1e-4)
    for name, value in single.model.state_dict().items():
        np.testing.assert_array_equal(weights0[name], weights1[name])  # the trainers stay equal
        np.testing.assert_allclose(weights0[name], value.numpy(), rtol=1e-4, atol=1e-5)


def test_backend_is_gloo_on_cpu_and_when_trainers_share_a_gpu():
    assert backend_for(torch.device("cpu"), 2) == "gloo"
    if not torch.cuda.is_available():
        assert backend_for(torch.device("cuda"), 2) == "gloo"
