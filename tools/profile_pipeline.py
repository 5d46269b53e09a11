"""Profile a speedy run's pipeline: where each role's time goes, what it delivers, how full the rings are, how stale
the weights are, which role limits training and what to change (speedy/profile.py does the analysis; the node
agent's end-of-run table is the same analysis).

    python tools/profile_pipeline.py RUN_DIR                       # finished or running run, from its metrics
    python tools/profile_pipeline.py RUN_DIR --live                # re-read every --every s, recent --last s
    python tools/profile_pipeline.py RUN_DIR --json                # machine-readable
    python tools/profile_pipeline.py RUN_DIR --window 60:300 --png profile.png --processes

`--window START:END` is in seconds since the run's first record (either side may be empty); by default the window
starts at the first training step. The PNG (needs matplotlib: pip install -e '.[tools]') has a stacked time bar per
process and the ring fill, GPU utilization (where the run had a GPU) and training rate over time.

A torchrun cluster: point it at node 0's run directory. The other nodes write theirs as `RUN_DIR/node<k>/` (the
same directory when the nodes share a filesystem; otherwise copy each node's `node<k>/` there, e.g. with rsync);
their processes appear as `node<k>/<role>` and count in their role kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speedy.profile import PipelineProfile, analyze, format_report, load_records  # noqa: E402
from speedy.stages import STAGES  # noqa: E402

COLORS = {"busy_tree": "#1f77b4", "busy_inference": "#ff7f0e", "busy_env": "#2ca02c", "busy_targets": "#9467bd",
          "busy_train": "#d62728", "busy_replay": "#8c564b", "transport": "#e377c2", "weights": "#bcbd22",
          "wait_input": "#c7c7c7", "wait_output": "#7f7f7f", "other": "#f0f0f0"}


def parse_window(text: str | None) -> tuple[float | None, float | None]:
    """'60:300' → (60.0, 300.0); ':300' → (None, 300.0); None → (None, None). Seconds since the run's start."""
    if not text:
        return None, None
    lo, _, hi = text.partition(":")
    return (float(lo) if lo else None), (float(hi) if hi else None)


def write_png(profile: PipelineProfile, path: Path) -> None:
    """Stacked stage bars per process (left) and ring fill / training rate over time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, timeline) = plt.subplots(1, 2, figsize=(13, 0.5 * max(6, len(profile.processes)) + 1.5))
    names = [p.name for p in profile.processes]
    left = [0.0] * len(names)
    for stage in STAGES:
        widths = [100 * p.shares[stage] for p in profile.processes]
        bars.barh(names, widths, left=left, color=COLORS[stage], label=stage, edgecolor="white", linewidth=0.3)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    bars.set_xlim(0, 100)
    bars.set_xlabel("share of wall time (%)")
    bars.invert_yaxis()
    bars.legend(fontsize=7, ncol=2, loc="lower left", bbox_to_anchor=(0, 1.01))
    for ring in profile.rings:
        timeline.plot([t for t, _ in ring.timeline], [100 * f for _, f in ring.timeline], label=f"ring {ring.name}")
    for gpu in profile.devices:
        label = f"{gpu.node}/{gpu.device}" if gpu.node != "node0" else gpu.device
        timeline.plot([t for t, _ in gpu.timeline], [100 * b for _, b in gpu.timeline], ":", label=f"{label} busy")
    timeline.set_xlabel("seconds since start")
    timeline.set_ylabel("ring fill (% of bytes), GPU busy (% of time)")
    timeline.set_ylim(0, 105)
    if profile.train_rate_trend:
        rate = timeline.twinx()
        rate.plot(*zip(*profile.train_rate_trend, strict=True), "k--", label="train steps/s")
        rate.set_ylabel("train steps/s")
        rate.legend(fontsize=7, loc="upper right")
    timeline.legend(fontsize=7, loc="upper left")
    d = profile.diagnosis
    title = textwrap.fill(f"bottleneck: {d.bottleneck} — {d.evidence}", 170) + "\n" + textwrap.fill(d.advice, 170)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(args: argparse.Namespace, window: tuple[float | None, float | None]) -> PipelineProfile:
    profile = analyze(args.run_dir, window, load_records(args.run_dir))
    if args.json:
        print(json.dumps(profile.to_json()), flush=True)
    else:
        print(format_report(profile, per_process=args.processes), flush=True)
    if args.png:
        write_png(profile, Path(args.png))
    return profile


def live(args: argparse.Namespace) -> None:
    """Re-read the metrics every `--every` s and profile the last `--last` s, until the run stops writing."""
    quiet = 0
    while quiet < 3:
        records = load_records(args.run_dir)
        newest = max((rows[-1]["time"] for rows in records.values() if rows), default=0.0)
        first = min((rows[0]["time"] for rows in records.values() if rows), default=newest)
        if records:
            print(f"\n--- {time.strftime('%H:%M:%S')} ---", flush=True)
            show(args, (max(0.0, newest - first - args.last), newest - first))
        quiet = quiet + 1 if time.time() - newest > 3 * args.every else 0
        time.sleep(args.every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--live", action="store_true", help="keep re-reading the metrics of a running run")
    parser.add_argument("--every", type=float, default=10.0, help="--live: seconds between reports")
    parser.add_argument("--last", type=float, default=60.0, help="--live: seconds of history each report covers")
    parser.add_argument("--window", help="START:END seconds since the run's start (default: from the first step)")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    parser.add_argument("--png", help="write the stage bars and the ring/rate timeline to this PNG")
    parser.add_argument("--processes", action="store_true", help="one row per process instead of per role kind")
    args = parser.parse_args(argv)
    if not (args.run_dir / "metrics").is_dir():
        parser.error(f"{args.run_dir} has no metrics/ directory (is it a run directory?)")
    if args.live:
        live(args)
    else:
        show(args, parse_window(args.window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
