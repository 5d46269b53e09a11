"""Throughput of a vector env with random actions.

Usage: python -m speedy.envs.bench --env Breakout --num-envs 16 --threads 1 --steps 500
Prints agent steps per second (each Atari step is 4 emulator frames) for the whole vector.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from speedy.envs.factory import make_vector_env


@dataclass(frozen=True)
class BenchResult:
    """Measured throughput: agent steps/s and raw frames/s (frames = 4 × steps for Atari)."""

    env_id: str
    num_envs: int
    num_threads: int
    steps_per_s: float
    frames_per_s: float


def bench(env_id: str, num_envs: int, num_threads: int, steps: int, mode: str = "train") -> BenchResult:
    """Step `num_envs` envs `steps` times with uniform random actions; time only the stepping."""
    env = make_vector_env(env_id, num_envs, seed=0, mode=mode, num_threads=num_threads)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.spec.num_actions, size=(steps, num_envs))
    try:
        env.reset(0)
        start = time.perf_counter()
        for a in actions:
            env.step(a)
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    skip = 4 if env.spec.kind == "atari" else 1
    rate = steps * num_envs / elapsed
    return BenchResult(env.spec.env_id, num_envs, num_threads, rate, rate * skip)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Breakout")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    args = parser.parse_args()
    r = bench(args.env, args.num_envs, args.threads, args.steps, args.mode)
    print(
        f"{r.env_id} envs={r.num_envs} threads={r.num_threads}: "
        f"{r.steps_per_s:,.0f} agent steps/s ({r.frames_per_s:,.0f} frames/s)"
    )


if __name__ == "__main__":
    main()
