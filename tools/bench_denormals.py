"""Training-step time of a trained model with denormal floats computed and flushed (issue 13's falling rate).

Loads a finished run's checkpoint (model and optimizer state, as trained), counts the denormal weights and optimizer
moments (0 < |x| < 1.2e-38), and times `Learner.train_step` on random batches of the run's shapes, with and without
`torch.set_flush_denormal`, against a freshly initialised model as the baseline, in alternating rounds.

    python tools/bench_denormals.py RUN_DIR [--steps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_train_step import random_batch  # noqa: E402
from hostinfo import host_info, host_line  # noqa: E402

from speedy.checkpoint import CHECKPOINT_NAME, load_latest  # noqa: E402
from speedy.components import build_model, task_spec  # noqa: E402
from speedy.config import config_from_dict  # noqa: E402
from speedy.learner import Learner  # noqa: E402

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def denormals(tensors: list[torch.Tensor]) -> int:
    return sum(int(((t.abs() < SMALLEST_NORMAL) & (t != 0)).sum()) for t in tensors
               if t.is_floating_point() and t.dtype == torch.float32)


def step_seconds(learner: Learner, batch, steps: int) -> float:  # noqa: ANN001
    learner.train_step(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        learner.train_step(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(run_dir: Path, steps: int) -> dict:
    config = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    record = load_latest(run_dir / CHECKPOINT_NAME, "cpu", None)
    spec, device = task_spec(config), torch.device("cpu")

    def learner(trained: bool) -> Learner:
        out = Learner(build_model(config, spec, device), config, spec.frame_stack, device)
        if trained:
            out.model.load_state_dict(record["model"])
            out.optimizer.load_state_dict(record["optimizer"])
            out.step = int(record["train_steps"])
        return out

    torch.set_num_threads(1)
    batch = random_batch(config, config.train.batch_size, 0)
    trained = learner(True)
    moments = [v for s in trained.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    result = {"run_dir": str(run_dir), "train_steps": int(record["train_steps"]), "batch_size": config.train.batch_size,
              "denormal_weights": denormals(list(trained.model.parameters())), "denormal_moments": denormals(moments)}
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        key = "flushed" if flush else "computed"
        # each timing starts from the checkpoint again (a flushed step zeroes the denormals it touches)
        result[f"fresh_step_s_{key}"] = step_seconds(learner(False), batch, steps)
        result[f"trained_step_s_{key}"] = step_seconds(learner(True), batch, steps)
    torch.set_flush_denormal(False)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case (median reported)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench(args.run_dir, args.steps) | {"host": host_info()}
    if args.json:
        print(json.dumps(result))
        return
    print(host_line(result["host"]))
    print(f"{args.run_dir}: step {result['train_steps']}, batch {result['batch_size']}, 1 torch thread; "
          f"{result['denormal_weights']} denormal weights, {result['denormal_moments']} denormal optimizer moments")
    for key in ("computed", "flushed"):
        print(f"  denormals {key:8s}: fresh model {1e3 * result[f'fresh_step_s_{key}']:7.1f} ms/step, "
              f"trained model {1e3 * result[f'trained_step_s_{key}']:7.1f} ms/step")


if __name__ == "__main__":
    main()
