import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from speedy.mcts import SearchConfig, completed_q_actions, completed_q_policy, greedy_actions, visit_distribution
from speedy.model import EfficientZeroNet, NetworkSpec
from speedy.search import ModelSearch, SearchRequest


def _search() -> ModelSearch:
    torch.manual_seed(0)
    spec = NetworkSpec((4,), 3, support_size=10, lstm_hidden=8, head_hidden=(8,), proj_hidden=8, proj_out=8,
                       pred_hidden=8, mlp_latent=8, mlp_hidden=(8,))
    model = EfficientZeroNet(spec).eval()
    for p in model.parameters():  # non-zero heads so that values and priors differ between nodes
        torch.nn.init.normal_(p, std=0.5)
    return ModelSearch(model, SearchConfig(num_simulations=12, discount=0.99, lstm_horizon=3), torch.device("cpu"))


def test_pipelined_searches_equal_sequential_ones():
    search = _search()
    rng = np.random.default_rng(0)
    requests = [SearchRequest(rng.normal(size=(5, 4)).astype(np.float32), None, seed) for seed in (1, 2, 3)]
    sequential = [search.run(r.obs, r.noise, r.seed) for r in requests]
    with ThreadPoolExecutor(1) as executor:
        pipelined = asyncio.run(search.run_pipelined(requests, executor))
    for a, b in zip(sequential, pipelined, strict=True):
        np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
        np.testing.assert_allclose(a.root_value, b.root_value, rtol=1e-6)
        assert a.visit_counts.sum() == 5 * 12


def test_warm_up_pools_a_searcher_per_batch_and_leaves_the_stage_seconds_alone():
    """The actor's warm-up before its first env step: a search per batch size, results and seconds dropped, and the
    searches after it give what they would have given without it."""
    search, fresh = _search(), _search()
    rng = np.random.default_rng(1)
    obs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 4)]
    assert search.warm_up(obs) > 0
    assert search.tree_seconds == 0 and search.inference_seconds == 0
    assert sorted(search._idle) == [3, 4] and all(len(pool) == 1 for pool in search._idle.values())
    for o in obs:
        np.testing.assert_array_equal(search.run(o, None, 7).visit_counts, fresh.run(o, None, 7).visit_counts)
    assert search.tree_seconds > 0 and search.inference_seconds > 0


def test_search_prefers_the_action_with_higher_value():
    """A stand-in dynamics where action 2 always leads to a high value: the search concentrates on it."""
    search = _search()
    model = search.model
    original = model.recurrent_inference

    def biased(latent, state, action):
        out = original(latent, state, action)
        out.value = torch.where(action == 2, torch.full_like(out.value, 5.0), torch.zeros_like(out.value))
        out.value_prefix = torch.zeros_like(out.value_prefix)
        out.policy_logits = torch.zeros_like(out.policy_logits)  # uniform priors: only values decide
        return out

    model.recurrent_inference = biased
    original_initial = model.initial_inference

    def uniform_root(obs):
        out = original_initial(obs)
        out.policy_logits = torch.zeros_like(out.policy_logits)
        return out

    model.initial_inference = uniform_root
    out = search.run(np.zeros((2, 4), np.float32), None, seed=0)
    assert np.all(out.visit_counts.argmax(1) == 2)


def test_the_greedy_action_and_the_policy_target_follow_the_configured_rules():
    """SearchOutput.greedy_action / policy_target: the most-visited child and the visit distribution by default; with
    "completed_q", Gumbel MuZero's on the search's own root Q, prior logits and network value."""
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(16, 4)).astype(np.float32)
    by_visits = _search().run(obs, None, seed=5)
    np.testing.assert_array_equal(by_visits.greedy_action, greedy_actions(by_visits.visit_counts))
    np.testing.assert_allclose(by_visits.policy_target, visit_distribution(by_visits.visit_counts, 1.0))
    search = _search()
    search.config = dataclasses.replace(search.config, greedy_rule="completed_q", policy_target_rule="completed_q")
    out = search.run(obs, None, seed=5)
    np.testing.assert_array_equal(out.visit_counts, by_visits.visit_counts)  # the rule changes the choice only
    expected = completed_q_actions(out.visit_counts, out.root_q, out.prior_logits, out.network_value)
    np.testing.assert_array_equal(out.greedy_action, expected)
    np.testing.assert_allclose(out.policy_target,
                               completed_q_policy(out.visit_counts, out.root_q, out.prior_logits, out.network_value))
    assert out.root_q.shape == out.prior_logits.shape == (16, 3)
    assert (out.greedy_action != by_visits.greedy_action).any()  # these random heads disagree somewhere


def test_one_step_greedy_action_is_the_argmax_of_the_networks_lookahead():
    """"one_step": r̂ + γ·v̂ of every root action, from one recurrent inference; it equals the tree's Q of each root
    child the search visited exactly once (the same inference), and the search's visits do not change."""
    rng = np.random.default_rng(4)
    obs = rng.normal(size=(16, 4)).astype(np.float32)
    few = _search()  # few simulations: many root children are visited exactly once
    few.config = dataclasses.replace(few.config, num_simulations=4)
    by_visits = few.run(obs, None, seed=5)
    assert by_visits.one_step_q is None
    search = _search()
    search.config = dataclasses.replace(search.config, num_simulations=4, greedy_rule="one_step")
    out = search.run(obs, None, seed=5)
    np.testing.assert_array_equal(out.visit_counts, by_visits.visit_counts)
    assert out.one_step_q.shape == (16, 3)
    np.testing.assert_array_equal(out.greedy_action, out.one_step_q.argmax(1))
    once = out.visit_counts == 1
    assert once.any()
    np.testing.assert_allclose(out.one_step_q[once], out.root_q[once], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # by hand for root 0, action 2: r = value prefix after the step (the root's is 0)
        root = search.model.initial_inference(torch.from_numpy(obs[:1]))
        step = search.model.recurrent_inference(root.latent, root.lstm_state, torch.tensor([2]))
    expected = float(step.value_prefix[0]) + 0.99 * float(step.value[0])
    assert out.one_step_q[0, 2] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_one_step_is_not_a_policy_target():
    with pytest.raises(ValueError, match="policy_target_rule"):
        SearchConfig(policy_target_rule="one_step")


def test_chunked_initial_inference_equals_one_call():
    """Initial inference in chunks (bounded activation memory) gives the outputs of one call over the batch."""
    from speedy.search import initial_inference

    search = _search()
    obs = np.random.default_rng(1).normal(size=(11, 4)).astype(np.float32)
    with torch.no_grad():
        whole = search.model.initial_inference(torch.from_numpy(obs))
    parts = initial_inference(search.model, obs, torch.device("cpu"), chunk=4)
    for name in ("value", "value_prefix", "policy_logits", "latent", "value_logits"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name))
    for a, b in zip(parts.lstm_state, whole.lstm_state, strict=True):
        assert a.shape == b.shape == (1, 11, 8)
        torch.testing.assert_close(a, b)


def test_inference_processes_split_the_gpu_share():
    """2 actors + 3 reanalyzers + 1 refresher + the evaluator split 0.6 of the GPU: 0.6/7 each."""
    from speedy.roles.context import RolePlan, inference_memory_fraction

    assert inference_memory_fraction(RolePlan(actors=2, reanalyzers=3, refreshers=1), 0.6) == 0.6 / 7


def test_inference_memory_cap_accepts_an_unindexed_cuda_device():
    """On a GPU machine: 'cuda' (what train.device = auto resolves to) caps the allocator without an index error. The
    specs are built and the CPU path is called before the skip, so a change of their signatures fails here on CI
    too (the H200 check of 2026-11-27 found this test calling RoleSpec without `threads`)."""
    import pytest

    from speedy.roles.context import RolePlan, RoleSpec, cap_inference_memory

    plan = RolePlan(actors=1, reanalyzers=1, refreshers=0)
    reanalyzer = RoleSpec("reanalyzer", 0, "r", "/tmp", {}, plan, threads=1)
    trainer = RoleSpec("trainer", 0, "r", "/tmp", {}, plan, threads=1)
    cap_inference_memory(reanalyzer, 0.6, torch.device("cpu"))  # CPU runs are never capped
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cap_inference_memory(reanalyzer, 0.6, torch.device("cuda"))
    cap_inference_memory(trainer, 0.6, torch.device("cuda"))  # not capped
    torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())
