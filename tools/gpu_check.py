"""The first command to run on a lent GPU (≤ 8 minutes): what this machine does with speedy, as JSON and a PNG.

    python tools/gpu_check.py [--minutes 8] [--out gpu_check/]      # CUDA machine: full-size network, Breakout
    python tools/gpu_check.py --cpu                                  # CI: tiny sizes on the CPU, < 1 minute

Sections (each result goes to gpu_check.json as soon as it is measured, so a cut-off run still leaves figures):
1. inference  — positions/s of initial and recurrent inference at the search batch sizes (actor 8 envs, a
                reanalysis batch 256 × 6 roots = 1536), fp32 and bf16 autocast;
2. train      — training steps/s at batch 256 (Learner.train_step: unroll 5, loss, backward, SGD), fp32 and mixed
                precision (bf16 autocast);
3. selfplay   — env steps/s of one actor's loop: Breakout vector env (8 envs), 50-simulation MCTS with root noise;
4. ddp        — one DistributedDataParallel training step in a world of 1 (NCCL on CUDA, gloo on the CPU, store on
                127.0.0.1), as the trainer node's DDP will do;
5. monitor    — the node agent's GPU utilization sampler (speedy/device_monitor.py) against a known load: matmuls
                back to back for half of an 8 s window, idle for the other half (expect ≈ 50 %);
6. training   — a single-box Breakout run (`run.py`, preset atari100k_1gpu) for the remaining minutes, stopped
                with SIGINT; its evaluation score against env steps and against wall-clock minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]

from atari100k import load_run  # noqa: E402
from bench_train_step import random_batch, time_calls  # noqa: E402

from speedy.components import build_model, search_config, task_spec  # noqa: E402
from speedy.config import Config, build_config  # noqa: E402
from speedy.device_monitor import DeviceMonitor  # noqa: E402
from speedy.envs import make_vector_env  # noqa: E402
from speedy.learner import Learner  # noqa: E402
from speedy.losses import TrainingBatch, unroll_loss  # noqa: E402
from speedy.mcts import dirichlet_noise, sample_actions  # noqa: E402
from speedy.obs import FrameStacker  # noqa: E402
from speedy.profile import analyze  # noqa: E402
from speedy.runinfo import host_summary  # noqa: E402
from speedy.search import ModelSearch  # noqa: E402

TINY = ["model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
        "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.support_size=20",
        "env.frame_size=48", "train.device=cpu"]


STOP_GRACE_S = 100.0  # seconds a SIGINTed run may take to stop (the trainer gets up to 90 s for its checkpoint)


class Sizes:
    """What each section measures: the real sizes on a GPU, tiny ones for `--cpu`."""

    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu
        self.overrides = TINY if cpu else []
        self.batches = [2, 8] if cpu else [8, 64, 256, 1536]
        self.train_batch = 8 if cpu else 256
        self.train_steps = 2 if cpu else 10
        self.simulations = 4 if cpu else 50
        self.selfplay_s = 2.0 if cpu else 20.0


def config_for(sizes: Sizes, extra: list[str] | None = None) -> Config:
    return build_config("atari100k", overrides=[*sizes.overrides, *(extra or [])])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(calls: int, seconds: float) -> float:
    return calls / max(seconds, 1e-9)


@torch.no_grad()
def inference_section(sizes: Sizes, device: torch.device) -> list[dict[str, Any]]:
    """Positions/s of initial and recurrent inference per batch size, fp32 and (CUDA) bf16 autocast."""
    config = config_for(sizes)
    spec = task_spec(config)
    model = build_model(config, spec, device).eval()
    rows = []
    for batch in sizes.batches:
        obs = torch.randint(0, 256, (batch, *model.spec.observation_shape), dtype=torch.uint8, device=device)
        action = torch.randint(0, spec.num_actions, (batch,), device=device)
        for precision in (["fp32", "bf16"] if device.type == "cuda" else ["fp32"]):
            ctx = torch.autocast("cuda", torch.bfloat16) if precision == "bf16" else torch.autocast("cpu",
                                                                                                 enabled=False)
            with ctx:
                first = model.initial_inference(obs)
                reps = 3 if sizes.cpu else 20
                t_init = statistics.median(time_calls(lambda obs=obs: model.initial_inference(obs), device)
                                           for _ in range(reps))
                t_rec = statistics.median(time_calls(lambda first=first, action=action: model.recurrent_inference(
                    first.latent, first.lstm_state, action), device) for _ in range(reps))
            rows.append({"batch": batch, "precision": precision, "initial_per_s": rate(batch, t_init),
                         "recurrent_per_s": rate(batch, t_rec), "recurrent_ms": 1e3 * t_rec})
    return rows


def train_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Training steps/s at batch `sizes.train_batch`, fp32 and mixed precision (bf16 autocast on CUDA only)."""
    out: dict[str, Any] = {"batch_size": sizes.train_batch}
    for name, mixed in (("fp32", False), ("mixed", True)):
        config = config_for(sizes, [f"train.mixed_precision={str(mixed).lower()}"])
        spec = task_spec(config)
        learner = Learner(build_model(config, spec, device), config, spec.frame_stack, device)
        batch = random_batch(config, sizes.train_batch, 0)
        learner.train_step(batch)  # warm-up: allocation, kernel selection
        seconds = [time_calls(lambda learner=learner, batch=batch: learner.train_step(batch), device)
                   for _ in range(sizes.train_steps)]
        out[f"{name}_steps_per_s"] = rate(1, statistics.median(seconds))
    out["mixed_applies"] = device.type == "cuda"
    return out


def selfplay_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """One actor's loop for `sizes.selfplay_s` seconds: search with root noise, sample, step 8 Breakout envs."""
    config = config_for(sizes)
    spec = task_spec(config)
    model = build_model(config, spec, device).eval()
    search = ModelSearch(model, search_config(config, spec, sizes.simulations), device)
    n = config.actor.num_envs
    env = make_vector_env(config.env.id, n, seed=0, mode="train", frame_size=config.env.frame_size)
    rng = np.random.default_rng(0)
    try:
        stacker = FrameStacker(n, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
        stacker.reset(env.reset(0).frames)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < sizes.selfplay_s:
            noise = dirichlet_noise(rng, n, spec.num_actions, config.mcts.dirichlet_alpha)
            out = search.run(stacker.observation(), noise, seed=steps)
            result = env.step(sample_actions(out.visit_counts, 1.0, rng))
            stacker.push(result.frames, result.terminated | result.truncated)
            steps += 1
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    return {"num_envs": n, "simulations": sizes.simulations, "env_steps_per_s": rate(steps * n, elapsed),
            "tree_s": search.tree_seconds, "inference_s": search.inference_seconds, "elapsed_s": elapsed}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LossModule(torch.nn.Module):
    """The training loss as a module, so that DistributedDataParallel's forward wraps a real training step."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        self.net, self.learner = learner.model, learner

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        learner = self.learner
        return unroll_loss(self.net, batch, learner.frame_stack, learner.config.mcts.lstm_horizon,
                           learner.loss_weights).total


def ddp_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Two DDP training steps (world of 1, gradients all-reduced) on 127.0.0.1: NCCL on CUDA, gloo on the CPU."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend = "nccl" if device.type == "cuda" else "gloo"
    start = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        config = config_for(sizes)
        spec = task_spec(config)
        learner = Learner(build_model(config, spec, device), config, spec.frame_stack, device)
        ddp = DistributedDataParallel(LossModule(learner), device_ids=[device] if device.type == "cuda" else None)
        batch = random_batch(config, sizes.train_batch, 0).to(device)
        init_s = time.perf_counter() - start

        def step() -> None:
            learner.optimizer.zero_grad(set_to_none=True)
            ddp(batch).backward()
            learner.optimizer.step()

        seconds = [time_calls(step, device) for _ in range(2)]
    finally:
        dist.destroy_process_group()
    return {"backend": backend, "batch_size": sizes.train_batch, "init_s": init_s, "first_step_s": seconds[0],
            "step_s": seconds[1]}


def monitor_section(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """The utilization the node agent records, against a GPU kept busy for the first half of an 8 s window."""
    if device.type != "cuda":
        return {"skipped": "no CUDA device (--cpu)"}
    monitor = DeviceMonitor.start(interval_s=0.5)
    if monitor is None:
        return {"error": "nvidia-smi is missing or fails: the profile will have no GPU figures"}
    time.sleep(1.0)
    monitor.report()  # drop the samples from before the load
    x = torch.randn(4096, 4096, device=device)
    busy_until = time.time() + 4.0
    while time.time() < busy_until:
        for _ in range(10):
            x = torch.tanh(x @ x)
        sync(device)
    time.sleep(4.0)
    report = monitor.report()
    monitor.close()
    busiest = max(report.values(), key=lambda g: g["busy_max"] or 0.0, default=None)
    return {"expected_busy": 0.5, "busiest_gpu": busiest, "all": report}


def training_section(sizes: Sizes, out: Path, seconds: float) -> dict[str, Any]:
    """A Breakout run for `seconds` (then SIGINT: the run stops cleanly); its evaluation curve."""
    run_dir = out / "breakout-run"
    if sizes.cpu:
        cmd = ["--preset", "atari100k", "--inline", "--max-env-steps", "120", *(a for s in [
            *TINY, "train.training_steps=4", "train.last_steps=0", "replay.start_env_steps=40",
            "train.batch_size=4", "eval.episodes=1", "eval.interval=2", "mcts.num_simulations=2",
            "eval.num_simulations=2", "actor.num_envs=4", "env.max_frames_eval=200", "replay.block_length=10",
            "model.mlp_latent=16", "model.mlp_hidden=[16]", "run.num_threads=1"] for a in ("--set", s))]
    else:  # evaluation every 100 steps, 8 games capped at 1,200 frames (not the 108k protocol) to fit the minutes:
        # an early policy that never serves plays to the cap, and at 20k frames (5,000 searched steps) the H200 run
        # of 2026-11-27 finished no evaluation in 4.5 minutes
        cmd = ["--preset", "atari100k_1gpu", "--set", "eval.interval=100", "--set", "eval.episodes=8",
               "--set", "env.max_frames_eval=1200"]
    cmd = [sys.executable, str(TOOLS.parent / "run.py"), *cmd, "--run-dir", str(run_dir)]
    with open(out / "training.log", "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=max(5.0, seconds))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # a clean stop: final checkpoint, shared memory removed
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    try:
        run = load_run(run_dir)
    except Exception as e:  # noqa: BLE001 - a run that never evaluated is a result to report, not a crash
        return {"run_dir": str(run_dir), "exit_code": process.returncode, "error": str(e)}
    profile = analyze(run_dir)  # what tools/profile_pipeline.py says, GPU utilization included
    return {"run_dir": str(run_dir), "exit_code": process.returncode, "env_steps": run.env_steps,
            "minutes": run.minutes, "curve": [vars(p) for p in run.curve],
            "milestones": run.milestones, "devices": [asdict(d) for d in profile.devices],
            "bottleneck": asdict(profile.diagnosis)}


def plot(results: dict[str, Any], path: Path) -> Path:
    """Inference throughput vs batch, train steps/s, and the training curve vs env steps and vs minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    for precision in sorted({r["precision"] for r in results.get("inference", [])}):
        rows = [r for r in results["inference"] if r["precision"] == precision]
        ax[0, 0].plot([r["batch"] for r in rows], [r["recurrent_per_s"] for r in rows], "o-",
                      label=f"recurrent {precision}")
        ax[0, 0].plot([r["batch"] for r in rows], [r["initial_per_s"] for r in rows], "s--",
                      label=f"initial {precision}")
    ax[0, 0].set(xscale="log", yscale="log", xlabel="batch", ylabel="positions/s", title="inference")
    ax[0, 0].legend(fontsize=7)
    train = results.get("train", {})
    ax[0, 1].bar(["fp32", "mixed"], [train.get("fp32_steps_per_s", 0), train.get("mixed_steps_per_s", 0)])
    ax[0, 1].set(ylabel="steps/s", title=f"train steps/s, batch {train.get('batch_size', '?')}")
    curve = results.get("training", {}).get("curve", [])
    for axis, key, label in ((ax[1, 0], "env_steps", "env steps"), (ax[1, 1], "minutes", "wall-clock minutes")):
        axis.plot([p[key] for p in curve], [p["mean_return"] for p in curve], "o-")
        axis.set(xlabel=label, ylabel="eval return", title=f"Breakout score vs {label}")
    fig.suptitle(f"{results['device_name']} — {results['host']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (CI), under a minute")
    parser.add_argument("--minutes", type=float, default=8.0, help="total budget; training gets what is left")
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="folder for gpu_check.json/.png")
    args = parser.parse_args(argv)
    start = time.time()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch; use --cpu for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda:0")
    if args.cpu:
        torch.set_num_threads(1)
    sizes = Sizes(args.cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"host": host_summary(), "device": str(device),
                               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                               "CPU (--cpu, tiny sizes)", "torch": torch.__version__}
    sections = [("inference", inference_section), ("train", train_section), ("selfplay", selfplay_section),
                ("ddp", ddp_section), ("monitor", monitor_section)]
    for name, section in sections:
        t = time.time()
        results[name] = section(sizes, device)
        results.setdefault("section_s", {})[name] = time.time() - t
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
        print(f"[gpu_check] {name} ({time.time() - t:.1f} s): {json.dumps(results[name])}", flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the training run's processes get the GPU memory the sections cached
    remaining = args.minutes * 60 - (time.time() - start) - STOP_GRACE_S - 15  # stopping, the final write and plot
    results["training"] = training_section(sizes, args.out, 40.0 if args.cpu else remaining)
    results["elapsed_s"] = time.time() - start
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    png = plot(results, args.out / "gpu_check.png")
    print(f"[gpu_check] training: {json.dumps(results['training'])[:400]}")
    print(f"[gpu_check] done in {results['elapsed_s']:.0f} s: {args.out / 'gpu_check.json'}, {png}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
