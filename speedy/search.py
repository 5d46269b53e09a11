"""MCTS driven by the network: the glue between `speedy.mcts` (tree work on the CPU) and the model (any device).

Latents and LSTM states stay on the model's device in per-slot tensors (S+1, B, ...); the engine only says which
slot and action each leaf expands from. Per simulation one `recurrent_inference` of B leaves runs.

`SearchJob` splits one search into steps so that a caller can keep two or more searches in flight (tree work for one
while the device runs another's inference); `ModelSearch.run` is the plain synchronous loop over a job.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from speedy.mcts import (
    ExpansionBatch,
    LeafBatch,
    RootBatch,
    SearchConfig,
    Searcher,
    completed_q_actions,
    completed_q_policy,
    greedy_actions,
    visit_distribution,
)
from speedy.model import EfficientZeroNet
from speedy.model.network import InferenceOutput

# Observation stacks per initial-inference call. A reanalysis batch searches 256 × 6 = 1536 roots: one 96×96 forward
# pass over all of them peaks at several GiB of activations, which each process's CUDA caching allocator then keeps
# (8 reanalyzers held ≈ 8 GiB each on an H100 and starved the trainer). Chunks of 512 cost < 5 % of throughput.
INFERENCE_CHUNK = 512


@dataclass
class SearchRequest:
    obs: np.ndarray  # (B, *obs_shape) observation stacks
    noise: np.ndarray | None  # (B, A) Dirichlet noise or None
    seed: int
    noise_fraction: np.ndarray | None = None  # (B,) each root's weight of its noise; None: the config's for all


@dataclass
class SearchOutput:
    visit_counts: np.ndarray  # (B, A) int32 root child visits
    root_value: np.ndarray  # (B,) float32 search value of the root
    network_value: np.ndarray  # (B,) float32 value predicted by initial inference
    root_q: np.ndarray  # (B, A) float32 Q = r + γ·v of each root child (0 where unvisited)
    prior_logits: np.ndarray  # (B, A) float32 the policy network's logits at the root (before any noise)
    greedy_action: np.ndarray  # (B,) int64 the greedy action by the config's greedy_rule (speedy.mcts.policy)
    policy_target: np.ndarray  # (B, A) float32 the policy target by the config's policy_target_rule, rows sum to 1
    one_step_q: np.ndarray | None = None  # (B, A) float32 r̂ + γ·v̂ one step from the root; only for "one_step"


def as_tensor(obs: np.ndarray, device: torch.device) -> torch.Tensor:
    """Observation stack (B, ...) uint8/float → tensor on `device` (uint8 stays uint8: 4× less to transfer)."""
    return torch.from_numpy(np.ascontiguousarray(obs)).to(device, non_blocking=True)


@torch.no_grad()
def initial_inference(model: EfficientZeroNet, obs: np.ndarray, device: torch.device,
                      chunk: int = INFERENCE_CHUNK) -> InferenceOutput:
    """`model.initial_inference` of observation stacks (B, *obs_shape) in chunks of at most `chunk`, concatenated:
    the same outputs as one call, with the activation peak of `chunk` stacks."""
    if obs.shape[0] <= chunk:
        return model.initial_inference(as_tensor(obs, device))
    parts = [model.initial_inference(as_tensor(obs[i : i + chunk], device)) for i in range(0, obs.shape[0], chunk)]
    return InferenceOutput(
        value=torch.cat([p.value for p in parts]),
        value_prefix=torch.cat([p.value_prefix for p in parts]),
        policy_logits=torch.cat([p.policy_logits for p in parts]),
        latent=torch.cat([p.latent for p in parts]),
        lstm_state=(torch.cat([p.lstm_state[0] for p in parts], 1), torch.cat([p.lstm_state[1] for p in parts], 1)),
        value_logits=torch.cat([p.value_logits for p in parts]),
        value_prefix_logits=None,
    )


def greedy_action(rule: str, visit_counts: np.ndarray, root_q: np.ndarray, prior_logits: np.ndarray,
                  network_value: np.ndarray, one_step_q: np.ndarray | None = None) -> np.ndarray:
    """(B,) int64 greedy action of each root by `rule` (speedy.mcts.policy.GREEDY_RULES); "one_step" needs
    `one_step_q` (B, A) (ties: the lowest action index)."""
    if rule == "completed_q":
        return completed_q_actions(visit_counts, root_q, prior_logits, network_value)
    if rule == "one_step":
        if one_step_q is None:
            raise ValueError("the 'one_step' greedy rule needs one_step_q")
        return np.argmax(one_step_q, axis=1).astype(np.int64)
    return greedy_actions(visit_counts)


@torch.no_grad()
def one_step_lookahead(model: EfficientZeroNet, root: InferenceOutput, discount: float) -> np.ndarray:
    """(B, A) float32 r̂(s, a) + discount · v̂(s'_a) for every root and action: one recurrent inference of the B·A
    (root, action) pairs from the roots' latents and LSTM states; r̂ is the child's value prefix less the root's."""
    batch, num_actions = root.policy_logits.shape
    device = root.latent.device
    latent = root.latent.repeat_interleave(num_actions, 0)
    state = (root.lstm_state[0].repeat_interleave(num_actions, 1), root.lstm_state[1].repeat_interleave(num_actions, 1))
    actions = torch.arange(num_actions, device=device).repeat(batch)
    out = model.recurrent_inference(latent, state, actions)
    reward = out.value_prefix.float().view(batch, num_actions) - root.value_prefix.float().view(batch, 1)
    return (reward + discount * out.value.float().view(batch, num_actions)).cpu().numpy()


def policy_target(rule: str, visit_counts: np.ndarray, root_q: np.ndarray, prior_logits: np.ndarray,
                  network_value: np.ndarray) -> np.ndarray:
    """(B, A) float32 policy target of each root by `rule` (speedy.mcts.policy.POLICY_TARGET_RULES)."""
    if rule == "completed_q":
        return completed_q_policy(visit_counts, root_q, prior_logits, network_value)
    return visit_distribution(visit_counts, 1.0)


class SearchJob:
    """One batched search in flight. Call `advance()` until it returns True, then read `output`."""

    def __init__(self, search: ModelSearch, obs: np.ndarray, noise: np.ndarray | None, seed: int,
                 noise_fraction: np.ndarray | None = None) -> None:
        start = time.perf_counter()
        self.search = search
        model, device = search.model, search.device
        root = initial_inference(model, obs, device)
        batch = obs.shape[0]
        sims = search.config.num_simulations
        self.latents = torch.empty((sims + 1, batch, *model.latent_shape), device=device)
        self.hidden = torch.empty((sims + 1, 1, batch, model.spec.lstm_hidden), device=device)
        self.cell = torch.empty_like(self.hidden)
        self.latents[0] = root.latent
        self.hidden[0], self.cell[0] = root.lstm_state
        self.rows = torch.arange(batch, device=device)
        self.network_value = root.value.float().cpu().numpy()
        self.prior_logits = root.policy_logits.float().cpu().numpy()
        self.one_step_q = (one_step_lookahead(model, root, search.config.discount)
                           if search.config.greedy_rule == "one_step" else None)
        self.searcher = search.searcher(batch)
        self.searcher.begin(
            RootBatch(
                value_prefix=root.value_prefix.float().cpu().numpy(),
                policy_logits=self.prior_logits,
                noise=noise,
                noise_fraction=noise_fraction,
            ),
            seed,
        )
        self.output: SearchOutput | None = None
        search.inference_seconds += time.perf_counter() - start

    @property
    def done(self) -> bool:
        return self.output is not None

    def select(self) -> LeafBatch:
        """Tree work: pick one leaf per root (CPU)."""
        start = time.perf_counter()
        leaf = self.searcher.select()
        self.search.tree_seconds += time.perf_counter() - start
        return leaf

    @torch.no_grad()
    def infer(self, leaf: LeafBatch) -> ExpansionBatch:
        """Device work: recurrent inference of the leaves; stores their latents and LSTM states in `leaf.slot`.
        Releases the GIL inside torch, so it can run in a worker thread while another job does tree work."""
        start = time.perf_counter()
        device = self.search.device
        parent = torch.from_numpy(leaf.parent_slot.astype(np.int64)).to(device)
        action = torch.from_numpy(leaf.action.astype(np.int64)).to(device)
        state = (self.hidden[parent, 0, self.rows].unsqueeze(0), self.cell[parent, 0, self.rows].unsqueeze(0))
        out = self.search.model.recurrent_inference(self.latents[parent, self.rows], state, action)
        keep = torch.from_numpy(~leaf.reset_hidden).to(device).view(1, -1, 1).float()
        self.latents[leaf.slot] = out.latent
        self.hidden[leaf.slot] = out.lstm_state[0] * keep
        self.cell[leaf.slot] = out.lstm_state[1] * keep
        expansion = ExpansionBatch(
            value=out.value.float().cpu().numpy(),
            value_prefix=out.value_prefix.float().cpu().numpy(),
            policy_logits=out.policy_logits.float().cpu().numpy(),
        )
        self.search.inference_seconds += time.perf_counter() - start
        return expansion

    def expand(self, out: ExpansionBatch) -> bool:
        """Tree work: expand and back up; returns True once the search is complete (then read `output`)."""
        start = time.perf_counter()
        self.searcher.expand_and_backup(out)
        if self.searcher.done:
            self._finish()
        self.search.tree_seconds += time.perf_counter() - start
        return self.done

    def advance(self) -> bool:
        """One whole simulation (select → inference → backup). Returns True once the search is complete."""
        if self.searcher.done:
            self._finish()
            return True
        leaf = self.select()
        return self.expand(self.infer(leaf))

    def _finish(self) -> None:
        if self.output is None:
            result = self.searcher.result()
            visits, root_q = result.visit_counts.copy(), result.root_q.copy()
            self.output = SearchOutput(
                visit_counts=visits,
                root_value=result.root_value.copy(),
                network_value=self.network_value,
                root_q=root_q,
                prior_logits=self.prior_logits,
                greedy_action=greedy_action(self.search.config.greedy_rule, visits, root_q, self.prior_logits,
                                            self.network_value, self.one_step_q),
                policy_target=policy_target(self.search.config.policy_target_rule, visits, root_q,
                                            self.prior_logits, self.network_value),
                one_step_q=self.one_step_q,
            )
            self.search.release(self.searcher)


class ModelSearch:
    """Batched MCTS with a network. Keeps a pool of engine `Searcher`s per batch size (no per-search allocation)."""

    def __init__(self, model: EfficientZeroNet, config: SearchConfig, device: torch.device) -> None:
        self.model = model
        self.config = config
        self.device = device
        self._idle: dict[int, list[Searcher]] = {}
        self.tree_seconds = 0.0  # cumulative CPU tree work (select, expand, backup)
        self.inference_seconds = 0.0  # cumulative network work (initial and recurrent inference, transfers)

    def searcher(self, batch: int) -> Searcher:
        pool = self._idle.setdefault(batch, [])
        return pool.pop() if pool else Searcher(batch, self.model.spec.num_actions, self.config)

    def release(self, searcher: Searcher) -> None:
        self._idle.setdefault(searcher.batch_size, []).append(searcher)

    def warm_up(self, observations: list[np.ndarray]) -> float:
        """One noise-free search of each observation batch (B, *obs_shape), results dropped: compiles the tree
        kernels (or loads them from numba's cache), pools a Searcher per batch size and runs the network once, so
        the first real search is as fast as the later ones. Not counted in tree/inference seconds; returns the
        seconds it took."""
        start, tree, inference = time.perf_counter(), self.tree_seconds, self.inference_seconds
        for obs in observations:
            self.run(obs, None, 0)
        self.tree_seconds, self.inference_seconds = tree, inference
        return time.perf_counter() - start

    @torch.no_grad()
    def start(self, obs: np.ndarray, noise: np.ndarray | None, seed: int,
              noise_fraction: np.ndarray | None = None) -> SearchJob:
        """Initial inference and tree set-up for obs (B, *obs_shape); step the job with `advance`."""
        return SearchJob(self, obs, noise, seed, noise_fraction)

    async def run_pipelined(self, requests: list[SearchRequest], executor: Executor) -> list[SearchOutput]:
        """Run several searches with their device work in `executor` (one worker thread): while one job's
        inference runs there, the event loop thread does the others' tree work, so neither side idles."""
        loop = asyncio.get_running_loop()

        async def drive(request: SearchRequest) -> SearchOutput:
            job = await loop.run_in_executor(executor, self.start, request.obs, request.noise, request.seed,
                                             request.noise_fraction)
            while not job.done:
                leaf = job.select()
                job.expand(await loop.run_in_executor(executor, job.infer, leaf))
            assert job.output is not None
            return job.output

        return list(await asyncio.gather(*(drive(r) for r in requests)))

    @torch.no_grad()
    def run(self, obs: np.ndarray, noise: np.ndarray | None, seed: int,
            noise_fraction: np.ndarray | None = None) -> SearchOutput:
        """Full search for obs (B, *obs_shape) with optional root noise (B, A), mixed in with each root's
        `noise_fraction` (B,) (None: the config's exploration fraction)."""
        job = self.start(obs, noise, seed, noise_fraction)
        while not job.advance():
            pass
        assert job.output is not None
        return job.output
