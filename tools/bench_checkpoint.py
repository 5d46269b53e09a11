"""What a checkpoint of an Atari 100k run costs: bytes and write time of each file, measured and extrapolated.

Builds the atari100k preset's network and optimizer (checkpoint.pt), a replay buffer with its block layout filled
with `--positions` positions of random episodes with episodic-life lengths (replay.npz), and a frame store of the
same number of 3×96×96 frames (frames.npz), writes each the way a run does (speedy.checkpoint, the replay role's
snapshot, the node agent's frame dump: tmp file, fsync, rename) into `--dir`, and reports size and seconds. The
buffer files scale linearly with positions, so the figures are also given for 100k positions.

Usage: python tools/bench_checkpoint.py [--positions 20000] [--dir /tmp] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info, host_line  # noqa: E402

from speedy.checkpoint import rng_state, save_checkpoint  # noqa: E402
from speedy.components import block_layout, build_model, task_spec  # noqa: E402
from speedy.config import build_config  # noqa: E402
from speedy.learner import Learner  # noqa: E402
from speedy.replay import ReplayBuffer, TrajectoryBlock  # noqa: E402
from speedy.roles.replay import save_snapshot  # noqa: E402
from speedy.roles.resume import save_frames  # noqa: E402
from speedy.shm import FrameStore, unlink_owned  # noqa: E402

FULL = 100_000


def filled_buffer(layout, positions: int, rng: np.random.Generator) -> ReplayBuffer:  # noqa: ANN001
    """A buffer of `positions` capacity, full of random blocks (lives of 10-60 steps, cut at the block length)."""
    buffer = ReplayBuffer(layout, positions, 0.6, 1e-6)
    ref = 0
    while buffer.positions_added < 1.2 * positions:
        length = int(min(layout.block_length, rng.integers(10, 61)))
        look = layout.lookahead
        buffer.add(TrajectoryBlock(
            frame_ids=np.arange(ref, ref + layout.frame_stack - 1 + length + look),
            actions=rng.integers(0, layout.num_actions, length + layout.unroll_steps),
            rewards=rng.random(length + look, dtype=np.float32),
            policies=rng.dirichlet(np.ones(layout.num_actions), length + layout.unroll_steps).astype(np.float32),
            length=length, valid_steps=length + look, collected_at=ref))
        ref += length
    return buffer


def timed_size(write, path: Path) -> dict:  # noqa: ANN001
    t0 = time.perf_counter()
    write()
    seconds = time.perf_counter() - t0
    return {"bytes": path.stat().st_size, "seconds": round(seconds, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=20_000)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (the disk a run dir would use)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    config = build_config("atari100k", None, [f"replay.capacity={a.positions}"])
    spec = task_spec(config)
    layout = block_layout(config, spec)
    out = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=a.dir))
    rng = np.random.default_rng(0)
    model = build_model(config, spec, torch.device("cpu"))
    learner = Learner(model, config, spec.frame_stack, torch.device("cpu"))
    for p in model.parameters():  # momentum buffers exist after a step: give every parameter one
        learner.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
    results = {"model": timed_size(lambda: save_checkpoint(out / "checkpoint.pt", {
        "model": model.state_dict(), "target_model": model.state_dict(), "optimizer": learner.optimizer.state_dict(),
        "train_steps": 0, "env_steps": 0, "rng": rng_state()}, config=asdict(config)), out / "checkpoint.pt")}
    buffer = filled_buffer(layout, a.positions, rng)
    results["replay"] = timed_size(lambda: save_snapshot(out, buffer, rng), out / "replay.npz")
    run_id = f"bench{uuid.uuid4().hex[:6]}"
    store = FrameStore.create(run_id, "frames0", spec.frame_shape, spec.frame_dtype, a.positions)
    try:
        chunk = rng.integers(0, 256, (1000, *spec.frame_shape), dtype=np.uint8)
        for _ in range(a.positions // 1000):
            store.append(chunk)
        results["frames"] = timed_size(lambda: save_frames(out, [store]), out / "frames.npz")
    finally:
        store.close()
        unlink_owned()
    for name in ("replay", "frames"):
        scale = FULL / a.positions
        results[name]["at_100k_bytes"] = int(results[name]["bytes"] * scale)
        results[name]["at_100k_seconds"] = round(results[name]["seconds"] * scale, 2)
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    report = {"host": host_info(), "positions": a.positions, "frame_shape": list(spec.frame_shape),
              "parameters": sum(p.numel() for p in model.parameters()), "files": results}
    if a.json:
        print(json.dumps(report, indent=1))
        return
    print(host_line(report["host"]))
    print(f"atari100k network: {report['parameters']:,} parameters; buffer of {a.positions:,} positions; "
          f"frames {tuple(spec.frame_shape)} uint8; written to {a.dir}")
    for name, r in results.items():
        extra = (f"  → 100k positions: {r['at_100k_bytes'] / 2**20:,.0f} MiB in {r['at_100k_seconds']:.1f} s"
                 if "at_100k_bytes" in r else "")
        print(f"{name:8s} {r['bytes'] / 2**20:10,.1f} MiB {r['seconds']:8.2f} s{extra}")


if __name__ == "__main__":
    main()
