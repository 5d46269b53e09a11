"""Benchmark the numba MCTS engine's tree work on one core.

A cheap deterministic stand-in replaces the network (table look-ups keyed by the leaf); its time is
measured separately and subtracted, so `sims_per_s` is tree work only: B * S / tree CPU seconds
(thread CPU time, so a busy shared machine inflates it less than wall time; wall time is shown too).
Also reports kernel compile seconds / cache hit and per-search Python allocations (tracemalloc)
for S = 10 and S = 50 to show they do not grow with S, and the host (CPU model, cache sizes, load
average, numba / numpy / llvmlite versions) so figures from different machines are never compared blind.

    .venv/bin/python tools/bench_mcts.py            # table
    .venv/bin/python tools/bench_mcts.py --json     # JSON
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from dataclasses import asdict, dataclass

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from hostinfo import host_info, host_line  # noqa: E402  (tools/hostinfo.py, this script's folder)

from speedy.mcts import (  # noqa: E402
    ExpansionBatch,
    LeafBatch,
    RootBatch,
    SearchConfig,
    Searcher,
    compile_info,
    dirichlet_noise,
)

SHAPES = ((1, 18, 50), (64, 4, 50), (256, 18, 50), (2048, 18, 50))


class StandIn:
    """Deterministic fake recurrent_fn: outputs looked up by a hash of (root, parent_slot, action, depth).

    Writes into preallocated arrays and accumulates its own wall time in `seconds`.
    """

    def __init__(self, batch: int, num_actions: int, size: int = 1021) -> None:
        rng = np.random.default_rng(0)
        self.value = rng.uniform(-1, 1, size).astype(np.float32)
        self.value_prefix = rng.uniform(-1, 1, size).astype(np.float32)
        self.logits = rng.normal(size=(size, num_actions)).astype(np.float32)
        self.size = size
        self.root_term = (np.arange(batch) * 131) % size
        self.key = np.empty(batch, np.int64)
        self.out = ExpansionBatch(
            np.empty(batch, np.float32), np.empty(batch, np.float32), np.empty((batch, num_actions), np.float32)
        )
        self.seconds = 0.0

    def __call__(self, leaf: LeafBatch) -> ExpansionBatch:
        start = time.thread_time()
        key = self.key
        np.multiply(leaf.parent_slot, 31, out=key)
        key += leaf.action * 7
        key += leaf.depth * 3
        key += self.root_term
        key %= self.size
        np.take(self.value, key, out=self.out.value)
        np.take(self.value_prefix, key, out=self.out.value_prefix)
        np.take(self.logits, key, axis=0, out=self.out.policy_logits)
        self.seconds += time.thread_time() - start
        return self.out


@dataclass
class BenchRow:
    batch: int
    actions: int
    simulations: int
    searches: int
    ms_per_search: float       # tree CPU ms per search (stand-in subtracted), median over searches
    wall_ms_per_search: float  # wall ms per search including the stand-in (inflated if the machine is busy)
    standin_ms_per_search: float
    sims_per_s: float          # B * S / tree CPU seconds (one core)


def make_roots(batch: int, num_actions: int) -> RootBatch:
    rng = np.random.default_rng(1)
    return RootBatch(
        np.zeros(batch, np.float32),
        rng.normal(size=(batch, num_actions)).astype(np.float32),
        dirichlet_noise(rng, batch, num_actions, 0.3),
    )


def one_search(searcher: Searcher, roots: RootBatch, net: StandIn, seed: int) -> tuple[float, float, float]:
    """Run one search; return (CPU seconds of this thread, stand-in CPU seconds, wall seconds)."""
    net.seconds = 0.0
    wall, start = time.perf_counter(), time.thread_time()
    searcher.begin(roots, seed)
    while not searcher.done:
        searcher.expand_and_backup(net(searcher.select()))
    searcher.result()
    return time.thread_time() - start, net.seconds, time.perf_counter() - wall


def bench_shape(batch: int, num_actions: int, simulations: int, budget_s: float) -> BenchRow:
    config = SearchConfig(num_simulations=simulations)
    searcher = Searcher(batch, num_actions, config)
    roots, net = make_roots(batch, num_actions), StandIn(batch, num_actions)
    one_search(searcher, roots, net, 0)  # warm caches
    tree, standin, walls = [], [], []
    deadline = time.perf_counter() + budget_s
    while len(tree) < 3 or (time.perf_counter() < deadline and len(tree) < 1000):
        total, fake, wall = one_search(searcher, roots, net, len(tree) + 1)
        tree.append(total - fake)
        standin.append(fake)
        walls.append(wall)
    tree_s = float(np.median(tree))
    return BenchRow(batch, num_actions, simulations, len(tree), tree_s * 1e3, float(np.median(walls)) * 1e3,
                    float(np.median(standin)) * 1e3, batch * simulations / tree_s)


def allocation_bytes(batch: int, num_actions: int, simulations: int) -> dict:
    """Python-heap bytes allocated (peak and retained) during a second search on a reused Searcher."""
    searcher = Searcher(batch, num_actions, SearchConfig(num_simulations=simulations))
    roots, net = make_roots(batch, num_actions), StandIn(batch, num_actions)
    one_search(searcher, roots, net, 0)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    one_search(searcher, roots, net, 1)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"simulations": simulations, "peak_bytes": peak - before, "retained_bytes": after - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of searches per shape")
    args = parser.parse_args()
    import numba

    numba.set_num_threads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    info = compile_info()
    load_before = os.getloadavg()[0]
    rows = [bench_shape(b, a, s, args.budget) for b, a, s in SHAPES]
    alloc = [allocation_bytes(256, 18, s) for s in (10, 50)]
    host = host_info()
    host["load_average_at_start"] = round(load_before, 2)
    report = {"host": host, "compile": info, "shapes": [asdict(r) for r in rows], "allocation_256x18": alloc}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(host_line(host))
    print(f"load average: {load_before:.2f} at start, {host['load_average'][0]:.2f} at end; "
          f"python {host['python']}, numba {host['numba']}, llvmlite {host['llvmlite']}, numpy {host['numpy']}")
    print(f"compile: {info['compile_seconds']:.2f} s, cache hit: {info['cache_hit']} ({info['cache_dir']})")
    print(f"{'B':>5} {'A':>3} {'S':>3} {'searches':>8} {'cpu ms/search':>13} {'wall ms':>8} "
          f"{'stand-in ms':>11} {'sims/s/core':>12}")
    for r in rows:
        print(f"{r.batch:>5} {r.actions:>3} {r.simulations:>3} {r.searches:>8} {r.ms_per_search:>13.3f} "
              f"{r.wall_ms_per_search:>8.3f} {r.standin_ms_per_search:>11.3f} {r.sims_per_s / 1e6:>10.3f} M")
    for a in alloc:
        print(f"allocation per search (256x18, S={a['simulations']}): peak {a['peak_bytes']} B, "
              f"retained {a['retained_bytes']} B")


if __name__ == "__main__":
    main()
