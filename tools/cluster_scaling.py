"""Scaling evidence for reanalysis across nodes: the real cluster (one `torchrun` launcher per node, RPC between
them) on this machine's loopback, with 1, 2, 3, … reanalysis nodes.

Node 0 is a combined node without reanalyzers of its own (replay, one actor, the trainer, the evaluator); each
reanalysis node runs one reanalyzer. Reanalysis is made the bottleneck by a fixed cost per batch in every
reanalyzer (`roles.slow_reanalyzers=all`, `roles.slow_reanalyzer_s=--cost-s`, a sleep: it costs no CPU, so a small
machine can stand in for many reanalysis nodes) and a tiny network. Per node count, over the run's training span
(speedy/profile.py, the numbers `tools/profile_pipeline.py` shows): trainer steps/s, reanalyzer batches/s (all
nodes), the trainer's wait for batches (share of its wall time), and payload bytes per training step on each
reanalysis node's link to node 0; the ideal is the one-node rate times the node count.

    .venv/bin/python tools/cluster_scaling.py                        # 1, 2, 3 reanalysis nodes, table
    .venv/bin/python tools/cluster_scaling.py --nodes 1 2 4 --cost-s 0.5 --png scaling.png --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hostinfo import host_info, host_line  # tools/hostinfo.py, this script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speedy.cluster.loopback import run_cluster, start_loopback_cluster  # noqa: E402
from speedy.profile import analyze  # noqa: E402
from speedy.shm import cleanup_stale  # noqa: E402

# A network small enough that the trainer and the actor are never what limits the rate; batches of 32.
TINY = ["model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
        "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.mlp_latent=16",
        "model.mlp_hidden=[16]", "model.support_size=20", "replay.start_env_steps=256", "replay.block_length=16",
        "train.batch_size=32", "mcts.num_simulations=4", "eval.interval=100000", "eval.episodes=1",
        "roles.refreshers=-1", "roles.actors=1", "run.log_interval_s=1", "train.training_steps=100000",
        "roles.slow_reanalyzers=all"]


@dataclass
class ScalingPoint:
    """One cluster size's measured rates over its training span."""

    reanalysis_nodes: int
    train_steps_per_s: float
    reanalyzer_batches_per_s: float
    trainer_wait: float  # share of the trainer's wall time spent waiting for batches
    link_kib_per_step: dict[str, float]  # node<k> → payload KiB per training step on its link to node 0
    ideal_train_steps_per_s: float = 0.0  # the one-node rate × nodes (filled in once the first point is known)
    minutes: float = 0.0  # wall time of the whole run, start-up included


def run_file(path: Path, nodes: int) -> Path:
    path.write_text(f"""preset = "cartpole"
[cluster]
interface = "lo"
rpc_timeout_s = 20.0
[[cluster.nodes]]
kind = "combined"
trainers = 1
actors = 1
reanalyzers = -1
[[cluster.nodes]]
kind = "reanalysis"
count = {nodes}
reanalyzers = 1
""")
    return path


def failure(codes: list[int], timeout_s: float) -> str:
    """What went wrong, per node: its exit code, or SIGKILL (still running at the deadline, when it is killed)."""
    parts = []
    for i, code in enumerate(codes):
        if code == -9:
            parts.append(f"node{i} killed (still running at the {timeout_s:.0f} s deadline, or killed from outside)")
        elif code != 0:
            parts.append(f"node{i} exited with code {code}")
    return "; ".join(parts)


def measure(nodes: int, cost_s: float, train_steps: int, work: Path, timeout_s: float) -> ScalingPoint:
    """Run a 1 + `nodes` node cluster to `train_steps` training steps and profile its training span."""
    run_dir = work / f"nodes{nodes}"
    run_dir.mkdir(parents=True)
    args = ["--config", str(run_file(run_dir / "cluster.toml", nodes)), "--run-dir", str(run_dir / "run"),
            "--max-train-steps", str(train_steps), "--set", f"roles.slow_reanalyzer_s={cost_s}"]
    for item in TINY:
        args += ["--set", item]
    started = time.monotonic()
    cluster = start_loopback_cluster(1 + nodes, REPO / "run.py", args, run_dir, run_dir, {"PYTHONPATH": str(REPO)})
    try:
        codes = run_cluster(cluster, timeout_s)
    finally:
        cleanup_stale()
    if codes != [0] * len(cluster):
        raise RuntimeError(f"{1 + nodes}-node cluster: {failure(codes, timeout_s)}\n" + "\n".join(
            f"--- node{i}.log ends:\n" + (run_dir / f"node{i}.log").read_text(errors="replace")[-1500:]
            for i in range(len(cluster))))
    profile = analyze(run_dir / "run")
    trainer, reanalyzers = profile.kinds["trainer"], profile.kinds["reanalyzer"]
    return ScalingPoint(
        reanalysis_nodes=nodes,
        train_steps_per_s=trainer.throughput.get("train steps/s", 0.0),
        reanalyzer_batches_per_s=reanalyzers.throughput.get("batches/s", 0.0),
        trainer_wait=trainer.shares.get("wait_input", 0.0),
        link_kib_per_step={link.node: sum(link.bytes_per_step.values()) / 1024 for link in profile.links},
        minutes=(time.monotonic() - started) / 60)


def table(points: list[ScalingPoint], cost_s: float) -> str:
    lines = [f"reanalysis cost {cost_s} s per batch (a sleep), one reanalyzer per node, node 0 none",
             "| reanalysis nodes | trainer steps/s | ideal | efficiency | reanalyzer batches/s | trainer wait | "
             "link KiB per training step (each node) | minutes |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
        links = ", ".join(f"{k} {v:.1f}" for k, v in sorted(p.link_kib_per_step.items()))
        eff = p.train_steps_per_s / p.ideal_train_steps_per_s if p.ideal_train_steps_per_s else 0.0
        lines.append(f"| {p.reanalysis_nodes} | {p.train_steps_per_s:.2f} | {p.ideal_train_steps_per_s:.2f} | "
                     f"{100 * eff:.0f} % | {p.reanalyzer_batches_per_s:.2f} | {100 * p.trainer_wait:.0f} % | {links} | "
                     f"{p.minutes:.1f} |")
    return "\n".join(lines)


def plot(points: list[ScalingPoint], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [p.reanalysis_nodes for p in points]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(nodes, [p.ideal_train_steps_per_s for p in points], "k--", label="ideal (linear in nodes)")
    ax.plot(nodes, [p.train_steps_per_s for p in points], "o-", label="trainer steps/s")
    ax.plot(nodes, [p.reanalyzer_batches_per_s for p in points], "s:", label="reanalyzer batches/s")
    ax.set_xlabel("reanalysis nodes")
    ax.set_ylabel("per second")
    ax.set_xticks(nodes)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3], help="reanalysis node counts to run")
    parser.add_argument("--cost-s", type=float, default=0.4, help="fixed reanalysis cost per batch (seconds)")
    parser.add_argument("--train-steps", type=int, default=400, help="training steps per cluster run")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per cluster run")
    parser.add_argument("--keep", type=Path, help="keep the run directories here (default: a removed temp dir)")
    parser.add_argument("--png", type=Path, help="write the scaling plot here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.nodes) or args.cost_s <= 0 or args.train_steps < 20:
        parser.error("--nodes must be >= 1, --cost-s > 0 and --train-steps >= 20")
    # SIGTERM (a batch system, a test's timeout) unwinds like Ctrl-C, so that the running cluster is killed too:
    # its launchers sit in sessions of their own and would otherwise outlive this script
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    host = host_info()
    if not args.json:
        print(host_line(host), flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="speedy-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    points = []
    try:
        for nodes in sorted(set(args.nodes)):
            if not args.json:
                print(f"running node 0 + {nodes} reanalysis node(s) to {args.train_steps} training steps …", flush=True)
            points.append(measure(nodes, args.cost_s, args.train_steps, work, args.timeout_s))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    per_node = points[0].train_steps_per_s / points[0].reanalysis_nodes
    if points[0].trainer_wait < 0.5:
        print(f"warning: with {points[0].reanalysis_nodes} reanalysis node(s) the trainer waited for batches only "
              f"{100 * points[0].trainer_wait:.0f} % of its time: reanalysis is not the bottleneck on this host, so "
              f"more nodes cannot raise the rate; raise --cost-s (now {args.cost_s} s)", file=sys.stderr)
    for p in points:
        p.ideal_train_steps_per_s = per_node * p.reanalysis_nodes
    if args.png:
        plot(points, args.png, f"loopback cluster, {args.cost_s} s reanalysis cost per batch\n{host['cpu']}")
    if args.json:
        print(json.dumps({"host": host, "cost_s": args.cost_s, "train_steps": args.train_steps,
                          "points": [asdict(p) for p in points]}, indent=2))
    else:
        print(table(points, args.cost_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
