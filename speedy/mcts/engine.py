"""Fast batched MCTS: dense preallocated trees walked by numba kernels (`speedy.mcts.kernels`).

`Searcher` is stepwise so a caller can keep several searches in flight (select for batch X while
batch Y's inference runs): `begin(roots, seed)`, then S times `select()` -> evaluate the LeafBatch ->
`expand_and_backup(out)`, then `result()`. `run_search` drives one Searcher to the end. The rules
and the test oracle are in `speedy.mcts.reference`; results match it (same choices, same values).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from speedy.mcts import kernels
from speedy.mcts.rng import seed_states
from speedy.mcts.types import (
    ExpansionBatch,
    LeafBatch,
    RootBatch,
    SearchConfig,
    SearchResult,
    check_expansion,
    check_roots,
)

_COMPILE_INFO: dict = {}
_KERNELS = (kernels.init_roots, kernels.select_leaves, kernels.expand_and_backup, kernels.root_statistics)


def _f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 view of x (copies only when the caller's dtype or layout differs)."""
    return np.ascontiguousarray(x, dtype=np.float32)


class Searcher:
    """Batched MCTS over a fixed number of roots; all arrays allocated once in the constructor.

    Tree arrays have N = num_simulations + 1 nodes per root (layout in `speedy.mcts.kernels`).
    A Searcher can be reused for any number of searches; `begin` resets it.
    """

    def __init__(self, batch_size: int, num_actions: int, config: SearchConfig) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        _ensure_compiled()
        self.batch_size = batch_size
        self.num_actions = num_actions
        self.config = config
        b, n, a = batch_size, config.num_simulations + 1, num_actions
        self.children_index = np.full((n, b, a), -1, dtype=np.int32)
        self.children_prior = np.zeros((n, b, a), dtype=np.float32)
        self.visit_count = np.zeros((n, b), dtype=np.int32)
        self.value_sum = np.zeros((n, b), dtype=np.float64)
        self.value_prefix = np.zeros((n, b), dtype=np.float64)
        self.is_reset = np.zeros((n, b), dtype=np.bool_)
        self.parent = np.full((n, b), -1, dtype=np.int32)
        self.action = np.full((n, b), -1, dtype=np.int32)
        self.depth = np.zeros((n, b), dtype=np.int32)
        self.bounds = np.zeros((b, 2), dtype=np.float64)
        self.rng_state = np.zeros(b, dtype=np.uint64)
        self.pb_c = kernels.exploration_table(config.num_simulations, config.pb_c_base, config.pb_c_init)
        self._leaf = LeafBatch(
            slot=0,
            parent_slot=np.zeros(b, dtype=np.int32),
            action=np.zeros(b, dtype=np.int32),
            depth=np.zeros(b, dtype=np.int32),
            reset_hidden=np.zeros(b, dtype=np.bool_),
        )
        self._result = SearchResult(
            visit_counts=np.zeros((b, a), dtype=np.int32),
            root_value=np.zeros(b, dtype=np.float32),
            root_q=np.zeros((b, a), dtype=np.float32),
        )
        self._no_noise = np.zeros((1, 1), dtype=np.float32)
        self._fraction = np.full(batch_size, config.exploration_fraction, dtype=np.float32)
        self._simulation = 0
        self._selected = False
        self._begun = False

    @property
    def done(self) -> bool:
        """True once all num_simulations simulations of the current search are backed up."""
        return self._begun and self._simulation == self.config.num_simulations

    def begin(self, roots: RootBatch, seed: int) -> None:
        """Start a search from B roots (B == batch_size); `seed` fixes the tie-break streams."""
        batch, actions = check_roots(roots)
        if (batch, actions) != (self.batch_size, self.num_actions):
            raise ValueError(
                f"RootBatch has (B, A) = ({batch}, {actions}) but this Searcher was built for "
                f"({self.batch_size}, {self.num_actions})"
            )
        self.rng_state[:] = seed_states(seed, batch)
        noise = self._no_noise if roots.noise is None else _f32(roots.noise)
        fraction = self._fraction if roots.noise_fraction is None else _f32(roots.noise_fraction)
        kernels.init_roots(
            self.children_index, self.children_prior, self.visit_count, self.value_sum,
            self.value_prefix, self.is_reset, self.parent, self.action, self.depth, self.bounds,
            _f32(roots.value_prefix), _f32(roots.policy_logits), noise, roots.noise is not None, fraction,
        )
        self._simulation = 0
        self._selected = False
        self._begun = True

    def select(self) -> LeafBatch:
        """Choose one leaf per root; the returned arrays are reused by the next `select`."""
        if not self._begun or self.done:
            raise RuntimeError("select() needs a begun, unfinished search (call begin() first)")
        if self._selected:
            raise RuntimeError("select() called twice without expand_and_backup() in between")
        cfg = self.config
        leaf = self._leaf
        kernels.select_leaves(
            self.children_index, self.children_prior, self.visit_count, self.value_sum,
            self.value_prefix, self.is_reset, self.depth, self.bounds, self.rng_state, self.pb_c,
            float(cfg.discount), float(cfg.value_delta_max),
            int(cfg.lstm_horizon), leaf.parent_slot, leaf.action, leaf.depth, leaf.reset_hidden,
        )
        leaf.slot = self._simulation + 1
        self._selected = True
        return leaf

    def expand_and_backup(self, out: ExpansionBatch) -> None:
        """Expand the selected leaves with the caller's inference and back their values up."""
        if not self._selected:
            raise RuntimeError("expand_and_backup() needs a select() first")
        check_expansion(out, self.batch_size, self.num_actions)
        leaf = self._leaf
        kernels.expand_and_backup(
            self._simulation + 1, self.children_index, self.children_prior, self.visit_count,
            self.value_sum, self.value_prefix, self.is_reset, self.parent, self.action, self.depth,
            self.bounds, leaf.parent_slot, leaf.action, leaf.depth, leaf.reset_hidden,
            _f32(out.value), _f32(out.value_prefix), _f32(out.policy_logits), float(self.config.discount),
        )
        self._simulation += 1
        self._selected = False

    def result(self) -> SearchResult:
        """Root statistics of the finished search (arrays reused by the next `result`)."""
        if not self.done:
            raise RuntimeError(
                f"result() before the search is done ({self._simulation} of "
                f"{self.config.num_simulations} simulations)"
            )
        res = self._result
        kernels.root_statistics(
            self.children_index, self.visit_count, self.value_sum, self.value_prefix,
            float(self.config.discount), res.visit_counts, res.root_value, res.root_q,
        )
        return res


def run_search(
    roots: RootBatch,
    recurrent_fn: Callable[[LeafBatch], ExpansionBatch],
    config: SearchConfig,
    seed: int,
) -> SearchResult:
    """Run a full search with a fresh Searcher; returns arrays owned by the caller."""
    batch, actions = check_roots(roots)
    searcher = Searcher(batch, actions, config)
    searcher.begin(roots, seed)
    while not searcher.done:
        searcher.expand_and_backup(recurrent_fn(searcher.select()))
    return searcher.result()


def _ensure_compiled() -> None:
    """Compile (or load from the numba cache) every kernel once per process, timing it."""
    if _COMPILE_INFO:
        return
    _COMPILE_INFO["compiling"] = True  # makes the Searcher built below skip this function
    try:
        _warm_up()
    except BaseException:
        _COMPILE_INFO.clear()
        raise


def _warm_up() -> None:
    start = time.perf_counter()
    searcher = Searcher(1, 2, SearchConfig(num_simulations=2))
    roots = RootBatch(
        value_prefix=np.zeros(1, np.float32),
        policy_logits=np.zeros((1, 2), np.float32),
        noise=np.full((1, 2), 0.5, np.float32),
    )
    out = ExpansionBatch(np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros((1, 2), np.float32))
    searcher.begin(roots, 0)
    while not searcher.done:
        searcher.select()
        searcher.expand_and_backup(out)
    searcher.result()
    searcher.begin(RootBatch(roots.value_prefix, roots.policy_logits, None), 0)
    hits = sum(sum(k.stats.cache_hits.values()) for k in _KERNELS)
    misses = sum(sum(k.stats.cache_misses.values()) for k in _KERNELS)
    _COMPILE_INFO.clear()
    _COMPILE_INFO.update(
        compile_seconds=time.perf_counter() - start,
        cache_hits=hits,
        cache_misses=misses,
        cache_hit=misses == 0 and hits > 0,
    )


def compile_info() -> dict:
    """Kernel compile report: {'compile_seconds', 'cache_hits', 'cache_misses', 'cache_hit', 'cache_dir'}.

    compile_seconds is the first use in this process (compiling, or loading the on-disk cache);
    cache_hit is True when every kernel came from the cache in NUMBA_CACHE_DIR.
    """
    _ensure_compiled()
    import numba

    return {**_COMPILE_INFO, "cache_dir": numba.config.CACHE_DIR}
