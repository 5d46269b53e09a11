"""Training-step time with EfficientZero's augmentation on and off (the Atari network, random batches).

Times `Learner.train_step` (unroll, loss, backward, optimizer) on batches of uint8 frames already in memory, once
with `train.augmentation=none` and once with the setting under test (default `auto`: shift + intensity), in
alternating rounds so drifts in machine load hit both alike. Also times the augmentation alone.

    python tools/bench_train_step.py [--batch-size 256] [--steps 5] [--device auto] [--json] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info, host_line  # noqa: E402

from speedy.augment import Augmentation  # noqa: E402
from speedy.components import build_model, resolve_device, task_spec  # noqa: E402
from speedy.config import Config, build_config  # noqa: E402
from speedy.learner import Learner  # noqa: E402
from speedy.losses import TrainingBatch, observation_stacks  # noqa: E402


def random_batch(config: Config, batch_size: int, seed: int) -> TrainingBatch:
    """A batch of the task's shapes: frames (B, s + K, *frame) uint8 and plausible targets."""
    spec = task_spec(config)
    K, A = config.train.unroll_steps, spec.num_actions
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch_size, spec.frame_stack + K, *spec.frame_shape), generator=g,
                           dtype=torch.uint8)
    policy = torch.rand(batch_size, K + 1, A, generator=g)
    return TrainingBatch(frames=frames, actions=torch.randint(0, A, (batch_size, K), generator=g),
                         target_value_prefix=torch.rand(batch_size, K, generator=g),
                         target_value=torch.rand(batch_size, K + 1, generator=g),
                         target_policy=policy / policy.sum(-1, keepdim=True), mask=torch.ones(batch_size, K + 1),
                         weights=torch.ones(batch_size))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - start


def bench(config: Config, setting: str, batch_size: int, steps: int) -> dict:
    """Median seconds per training step with augmentation 'none' and `setting`, and for the augmentation alone."""
    device = resolve_device(config.train.device)
    spec = task_spec(config)
    batch = random_batch(config, batch_size, config.run.seed)
    learners = {}
    for name in ("none", setting):
        config.train.augmentation = name
        learners[name] = Learner(build_model(config, spec, device), config, spec.frame_stack, device)
        learners[name].train_step(batch)  # warm-up: allocations, kernel selection
    seconds: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(steps):
        for name, learner in learners.items():
            seconds[name].append(time_calls(lambda learner=learner: learner.train_step(batch), device))
    on_device = batch.to(device)
    augment = learners[setting].augment or Augmentation((), 0, device)
    alone = [time_calls(lambda: observation_stacks(on_device, spec.frame_stack, augment), device)
             for _ in range(steps)]
    plain = [time_calls(lambda: observation_stacks(on_device, spec.frame_stack), device) for _ in range(steps)]
    return {"device": str(device), "batch_size": batch_size, "steps": steps, "augmentation": setting,
            "step_s_off": statistics.median(seconds["none"]), "step_s_on": statistics.median(seconds[setting]),
            "stacks_s_off": statistics.median(plain), "stacks_s_on": statistics.median(alone),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="atari100k")
    parser.add_argument("--augmentation", default="auto", help="the setting compared with 'none'")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()
    config = build_config(args.preset, overrides=args.overrides)
    result = bench(config, args.augmentation, args.batch_size, args.steps)
    result["host"] = host_info()
    if args.json:
        print(json.dumps(result))
        return
    print(host_line(result["host"]))
    print(f"{config.env.id} network, batch {result['batch_size']} on {result['device']} "
          f"({result['torch_threads']} torch threads), median of {result['steps']} steps:")
    off, on = result["step_s_off"], result["step_s_on"]
    for label, seconds in ((f"training step, augmentation {'none':16s}", off),
                           (f"training step, augmentation {args.augmentation:16s}", on),
                           (f"stacks alone, augmentation {'none':17s}", result["stacks_s_off"]),
                           (f"stacks alone, augmentation {args.augmentation:17s}", result["stacks_s_on"])):
        print(f"  {label} {seconds * 1e3:9.1f} ms")
    print(f"  augmentation adds {100 * (on / off - 1):+.1f} % to a training step")


if __name__ == "__main__":
    main()
