"""Learning benchmark: N seeds of any preset, each run to its full budget (never stopped at the target), then per
seed the first env step at which a full evaluation's mean return reached the threshold (and the minutes then), the
share of the later evaluations that stayed at or above it, best / last evaluation, final counters and minutes;
a summary line over seeds, and optionally a PNG of every seed's evaluation curve against env steps and minutes.

    python tools/learning_benchmark.py --preset cartpole --num-seeds 10 [--inline] [--jobs 2] [--png curves.png]
    python tools/learning_benchmark.py --seeds 0 1 2 --set train.batch_size=512 --run-root runs/bench
    python tools/learning_benchmark.py --from-runs runs/bench [--threshold 475] [--json] [--png curves.png]

Runs are multi-process (`run.py`'s default) unless `--inline`. `run.stop_eval_return` is forced to 0; the threshold
is `--threshold`, else the preset's (or `--set`'s) `run.stop_eval_return`. `--jobs K` runs K seeds at once, each
in its own spawned process; minutes are then per run with the others beside it. `--pin` gives each job its own
cores (os.sched_setaffinity, inherited by a multi-process run's role processes, whose plan sizes itself to the
mask): inline one core each, multi-process cores/K each. Run directories are `RUN_ROOT/<preset>-<mode>-s<seed>`
(`--run-root`, default a temporary directory) and `--from-runs` rebuilds the table from them (or any run
directories) without running anything. Figures: speedy/learning_report.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostinfo import host_info, host_line  # noqa: E402

from speedy.config import ConfigError, build_config  # noqa: E402
from speedy.learning_report import (  # noqa: E402
    BENCHMARK_FILE,
    SeedRow,
    find_runs,
    markdown_table,
    read_run,
    summarize,
    summary_line,
)

_PINNED: list[int] | None = None  # this process's cores when --pin gave it some
_STOPPED = False  # Ctrl-C or SIGTERM: the run in progress stops cleanly and no further seed starts
_BENCHMARK_PID = 0  # in a pool worker: the benchmark process that started it


def _interrupted(run_dir: Path) -> bool:
    """A multi-process run handles Ctrl-C/SIGTERM itself (clean stop, then returns); its agent records why."""
    path = run_dir / "metrics" / "agent.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return any(json.loads(line).get("reason") == "interrupted" for line in lines[-3:] if line.strip())


def _on_stop(signum: int, frame: Any) -> None:  # noqa: ANN401, ARG001
    global _STOPPED
    _STOPPED = True
    raise KeyboardInterrupt


def core_sets(available: Sequence[int], jobs: int, inline: bool) -> list[list[int]]:
    """Each job's cores: inline runs one core each, multi-process runs an even share (the remainder unused)."""
    cores = sorted(available)
    if len(cores) < jobs:
        raise ValueError(f"--pin: {jobs} jobs need at least {jobs} cores, this process may use {len(cores)}")
    per = 1 if inline else len(cores) // jobs
    return [cores[i * per:(i + 1) * per] for i in range(jobs)]


def pin(cores: list[int]) -> None:
    """Restrict this process (and the processes it starts) to `cores`."""
    global _PINNED
    os.sched_setaffinity(0, cores)
    _PINNED = cores


def _init_worker(queue: Any) -> None:  # noqa: ANN401 (a multiprocessing queue, or None)
    """A pool worker: SIGTERM when the benchmark process dies (by any signal), and SIGTERM ends its run through
    the run's own clean-up (KeyboardInterrupt), so a stopped benchmark leaves no run or segment behind; pinned
    to its cores with --pin."""
    from speedy.roles.process import signal_on_parent_death

    global _BENCHMARK_PID
    _BENCHMARK_PID = os.getppid()
    signal.signal(signal.SIGTERM, _on_stop)
    signal_on_parent_death(signal.SIGTERM)
    if os.getppid() == 1:  # the benchmark died before the prctl
        raise SystemExit(3)
    if queue is not None:
        pin(queue.get())


def run_seed(preset: str, seed: int, inline: bool, overrides: list[str], run_dir: Path, threshold: float) -> str:
    """One full-budget run of `preset` with `seed` into `run_dir` (benchmark.json written first); returns run_dir."""
    from speedy.components import make_run_dir

    extra = [f"run.seed={seed}", *overrides]
    if _PINNED is not None and inline and build_config(preset, overrides=extra).run.num_threads == 0:
        extra.append(f"run.num_threads={len(_PINNED)}")  # inline sizes Atari's threads by os.cpu_count()
    config = build_config(preset, overrides=[*extra, "run.stop_eval_return=0"])  # never stop early
    make_run_dir(config, run_dir)
    (run_dir / BENCHMARK_FILE).write_text(json.dumps({
        "preset": preset, "seed": seed, "mode": "inline" if inline else "multi-process", "threshold": threshold,
        "overrides": overrides, "cores": _PINNED}, indent=2))
    try:
        if inline:
            from speedy.inline import run_inline

            run_inline(config, run_dir, log=False)
        else:
            from speedy.roles.launch import run_single_box

            run_single_box(config, run_dir, log=False)
    finally:
        if _BENCHMARK_PID and (_STOPPED or os.getppid() != _BENCHMARK_PID):
            # A stopped worker, or one whose benchmark died: its run has cleaned up. Exit rather than return, or
            # the pool hands this worker the next seed it had already queued.
            os._exit(130)
    return str(run_dir)


def run_all(args: argparse.Namespace, seeds: list[int], threshold: float, run_root: Path) -> list[Path]:
    """Every seed's run, `args.jobs` at a time; returns their run directories in seed order."""
    mode = "inline" if args.inline else "multi-process"
    dirs = [run_root / f"{args.preset}-{mode}-s{seed}" for seed in seeds]
    for d in dirs:
        if (d / "metrics").exists():
            raise SystemExit(f"{d} already holds a run; choose another --run-root")
    calls = [(args.preset, seed, args.inline, args.overrides, d, threshold) for seed, d in zip(seeds, dirs,
                                                                                              strict=True)]
    sets = core_sets(os.sched_getaffinity(0), args.jobs, args.inline) if args.pin else None
    if args.jobs == 1:
        if sets:
            pin(sets[0])
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_stop)
        done = []
        for call in calls:
            try:
                done.append(Path(run_seed(*call)))
            except KeyboardInterrupt:  # an inline run lets the signal through
                done.append(call[4])
            if _STOPPED or _interrupted(done[-1]):
                print(f"stopped: {len(done)} of {len(calls)} seed(s) run; the table covers them", flush=True)
                break
        return done
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for cores in sets or []:
        queue.put(cores)
    pool = ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker,
                               initargs=(queue if sets else None,))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_stop)
    try:
        return [Path(d) for d in pool.map(run_seed, *zip(*calls, strict=True))]
    except KeyboardInterrupt:
        print("stopped: the runs in progress were told to stop; re-make the table with --from-runs", flush=True)
        for worker in list(getattr(pool, "_processes", {}).values()):
            worker.terminate()  # SIGTERM: each run cleans up and ends
        pool.shutdown(wait=True, cancel_futures=True)
        raise SystemExit(130) from None
    finally:
        pool.shutdown(wait=True)


def curve_labels(rows: Sequence[SeedRow]) -> list[str]:
    """"seed N" per curve; where a seed appears more than once (runs of several settings tabulated together with
    --from-runs), "seed N (<parent folder>)", the folder being the run root that names the setting."""
    seeds = [row.seed for row in rows]
    return [f"seed {row.seed}" + (f" ({Path(row.run_dir).parent.name})" if seeds.count(row.seed) > 1 and row.run_dir
                                  else "") for row in rows]


def plot(rows: Sequence[SeedRow], threshold: float, title: str, path: Path) -> Path:
    """Two panels: every seed's evaluation curve against env steps and against minutes, the threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = curve_labels(rows)
    for ax, x, label in zip(axes, ("env_steps", "minutes"), ("env steps", "wall-clock minutes"), strict=True):
        for row, name in zip(rows, names, strict=True):
            ax.plot([getattr(p, x) for p in row.curve], [p.mean_return for p in row.curve], marker="o", ms=2,
                    lw=1, label=name)
        ax.axhline(threshold, ls="--", c="k", lw=0.8, label=f"threshold {threshold:g}")
        ax.set_xlabel(label)
        ax.set_ylabel("mean eval return")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cartpole")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default 0 1 2)")
    seeds.add_argument("--num-seeds", type=int, help="seeds 0 … N-1")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inline", action="store_true", help="every role in one process")
    mode.add_argument("--multiprocess", action="store_true", help="the single-box system (default, as run.py)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (spawned processes)")
    parser.add_argument("--pin", action="store_true", help="give each job its own cores (inline 1, else cores/K)")
    parser.add_argument("--threshold", type=float, help="default: run.stop_eval_return of the preset / --set")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable)")
    parser.add_argument("--run-root", type=Path, help="where run directories are kept (default: a temp dir)")
    parser.add_argument("--from-runs", nargs="+", metavar="DIR", help="tabulate these run directories (or roots "
                        "holding them) instead of running")
    parser.add_argument("--png", type=Path, help="write the eval curves here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the markdown table")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    host = host_info()
    if args.from_runs:
        runs = [read_run(d) for d in find_runs(args.from_runs)]
        if not runs:
            raise SystemExit(f"no run directories in {' '.join(args.from_runs)}")
        recorded = {r.threshold() for r in runs} - {None}
        if args.threshold is None and len(recorded) != 1:
            raise SystemExit(f"--threshold needed (the runs record {sorted(recorded) or 'none'})")
        threshold = args.threshold if args.threshold is not None else recorded.pop()
        presets = {r.benchmark.get("preset", "?") for r in runs}
        preset = ",".join(sorted(presets))
    else:
        try:
            default = build_config(args.preset, overrides=args.overrides).run.stop_eval_return
        except ConfigError as e:
            raise SystemExit(str(e)) from e
        threshold = args.threshold if args.threshold is not None else (default or None)
        if threshold is None:
            raise SystemExit(f"--threshold needed: preset '{args.preset}' has no run.stop_eval_return")
        seeds = args.seeds or list(range(args.num_seeds if args.num_seeds is not None else 3))
        run_root = args.run_root or Path(tempfile.mkdtemp(prefix=f"speedy-bench-{args.preset}-"))
        if not args.json:
            print(host_line(host), flush=True)
            print(f"running {len(seeds)} seed(s) of '{args.preset}' into {run_root}", flush=True)
        runs = []
        for run_dir in run_all(args, seeds, threshold, run_root):
            try:
                runs.append(read_run(run_dir))
            except FileNotFoundError as e:  # stopped before its first evaluation
                print(f"left out: {e}", flush=True)
        if not runs:
            raise SystemExit("no run got as far as an evaluation")
        preset = args.preset
    rows = [r.row(threshold) for r in runs]
    summary = summarize(rows)
    env = runs[0].config.get("env", {}).get("id", "?")
    title = f"{preset} ({env}), threshold {threshold:g}"
    figure = str(plot(rows, threshold, title, args.png)) if args.png else None
    if args.json:
        how = ({"from_runs": args.from_runs} if args.from_runs else
               {"run_root": str(run_root), "jobs": args.jobs, "pin": args.pin, "overrides": args.overrides})
        print(json.dumps({"host": host, "host_line": host_line(host), "preset": preset, "env": env,
                          "threshold": threshold, **how, "summary": summary,
                          "seeds": [asdict(r) | {"later_share": r.later_share} for r in rows],
                          "run_hosts": [r.host for r in runs], "png": figure}, indent=2))
        return 0
    if args.from_runs:
        print(host_line(host) + " (where this table was made)")
        for cpu, usable in sorted({(r.host.get("cpu", "?"), r.host.get("usable_cpus", "?")) for r in runs}, key=str):
            print(f"runs ran on: {cpu}, {usable} usable CPUs")
    print(f"\n{title}\n")
    print(markdown_table(rows, threshold))
    print(f"\n{summary_line(summary)}")
    if figure:
        print(f"curves: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
