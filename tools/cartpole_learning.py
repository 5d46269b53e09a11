"""Learning benchmark: CartPole-v1 to a mean greedy evaluation return ≥ 475 (10 episodes) within 10k env steps.

Runs the `cartpole` preset over several seeds (inline mode by default, `--multiprocess` for the single-box system)
and prints, per seed, whether the target was reached, at how many env steps and after how many minutes.

    python tools/cartpole_learning.py --seeds 0 1 2 [--jobs 2] [--json]

Inline runs use one core each: `--jobs 2` runs two seeds at once on a 2-core machine (minutes are then per run,
with the other run beside it). Multi-process runs size themselves to the whole machine; keep them at --jobs 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speedy.config import build_config  # noqa: E402


def run_seed(seed: int, multiprocess: bool, overrides: list[str], run_root: Path) -> dict:
    config = build_config("cartpole", overrides=[f"run.seed={seed}", *overrides])
    run_dir = run_root / f"cartpole-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if multiprocess:
        from speedy.roles.launch import run_single_box

        summary = run_single_box(config, run_dir, log=False)
    else:
        from speedy.inline import run_inline

        summary = run_inline(config, run_dir, log=False)
    return {"seed": seed, "wall_minutes": (time.time() - start) / 60, **asdict(summary)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--multiprocess", action="store_true", help="use the multi-process single-box system")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--run-root", default=None, help="where run directories go (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (inline: one core each)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run_root = Path(args.run_root or tempfile.mkdtemp(prefix="speedy-cartpole-"))
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_seed, args.seeds, [args.multiprocess] * len(args.seeds),
                                    [args.overrides] * len(args.seeds), [run_root] * len(args.seeds)))
    else:
        results = [run_seed(seed, args.multiprocess, args.overrides, run_root) for seed in args.seeds]
    report = {
        "mode": "multiprocess" if args.multiprocess else "inline",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "jobs": args.jobs,
        "target": 475.0,
        "runs": results,
        "reached": sum(r["reached_target_env_steps"] is not None for r in results),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"CartPole-v1 ({report['mode']}), target mean eval return >= 475 within 10k env steps")
        for r in results:
            if r["reached_target_env_steps"] is not None:
                print(f"  seed {r['seed']}: reached at {r['reached_target_env_steps']} env steps, "
                      f"{r['reached_target_minutes']:.1f} min (train steps {r['train_steps']})")
            else:
                print(f"  seed {r['seed']}: NOT reached; best eval {r['best_eval_return']}, "
                      f"{r['env_steps']} env steps, {r['minutes']:.1f} min")
        print(f"reached {report['reached']}/{len(results)}")
    return 0 if report["reached"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
