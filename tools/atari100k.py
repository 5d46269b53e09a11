"""Atari 100k report: collect finished run directories (from any machine) and write a markdown table, JSON and
learning-curve PNGs; optionally launch the missing game × seed runs first.

    python tools/atari100k.py runs/ --out report/                      # every run directory below runs/
    python tools/atari100k.py runs/a runs/b --games Breakout Pong --seeds 0 1 2 --out report/
    python tools/atari100k.py --launch --games Breakout Pong --seeds 0 1 --runs-root runs/a100k --out report/ \\
        [--preset atari100k] [--inline] [--set key=value ...]

A run directory holds config.json (task and seed), metrics/evaluator.jsonl (single-box; metrics/eval.jsonl for
inline runs: one record per evaluation with env_steps, mean_return and the unix time), metrics/agent.jsonl (the
start record with the host and the env-step milestones, speedy/runinfo.py) and summary.json.

Per run, "score" is the mean return of its last evaluation (eval.episodes games on the evaluation protocol);
per game, the table shows the mean ± std of that score over seeds, and HNS = (mean − random) / (human − random).
Minutes are wall-clock since the run started (the agent's start record) at the end of the evaluation; "minutes to
human" is the first evaluation whose mean return reached the human score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speedy.envs.scores import (  # noqa: E402
    atari100k_game,
    efficientzero_score,
    human_normalized_score,
    reference_scores,
)
from speedy.learning_report import EvalPoint, eval_curve  # noqa: E402  (one evaluation: env steps, minutes, return)
from speedy.metrics import read_metrics  # noqa: E402


@dataclass
class RunResult:
    """What the report needs from one run directory."""

    run_dir: str
    game: str  # ALE ROM id, e.g. "breakout"
    seed: int
    curve: list[EvalPoint]
    env_steps: int
    minutes: float
    host: dict[str, Any] = field(default_factory=dict)
    milestones: list[tuple[int, float]] = field(default_factory=list)  # (env steps, minutes)

    @property
    def score(self) -> float:
        """Mean return of the last evaluation."""
        return self.curve[-1].mean_return

    @property
    def env_steps_per_minute(self) -> float:
        """Self-play throughput: env steps at the last milestone over its wall-clock minutes (else the totals)."""
        steps, minutes = self.milestones[-1] if self.milestones else (self.env_steps, self.minutes)
        return steps / max(minutes, 1e-9)

    def to_human(self) -> EvalPoint | None:
        """The first evaluation that reached the human score, or None."""
        human = reference_scores(self.game).human
        return next((p for p in self.curve if p.mean_return >= human), None)


class ReportError(RuntimeError):
    """A run directory the report cannot use; the message names it."""


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories among `paths`: each path that has a config.json, else its descendants that do."""
    found: list[Path] = []
    for path in paths:
        if (path / "config.json").exists():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.rglob("config.json"))
    return found


def _eval_records(run_dir: Path) -> list[dict[str, Any]]:
    for name in ("evaluator.jsonl", "eval.jsonl"):
        path = run_dir / "metrics" / name
        if path.exists():
            return [r for r in read_metrics(path) if "mean_return" in r]
    return []


def load_run(run_dir: Path) -> RunResult:
    """Read one finished run directory; ReportError if it is not an Atari 100k run or has no evaluation."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        game = atari100k_game(config["env"]["id"])
    except (OSError, ValueError, KeyError) as e:
        raise ReportError(f"{run_dir}: not an Atari 100k run ({e})") from e
    agent = read_metrics(run_dir / "metrics" / "agent.jsonl") if (run_dir / "metrics" / "agent.jsonl").exists() \
        else []
    starts = [r for r in agent if r.get("event") == "start"]
    evals = _eval_records(run_dir)
    if not evals:
        raise ReportError(f"{run_dir}: no evaluation records (metrics/evaluator.jsonl or metrics/eval.jsonl)")
    t0 = starts[0]["time"] if starts else min(r["time"] for r in evals)
    curve = eval_curve(evals, t0)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    return RunResult(
        run_dir=str(run_dir), game=game, seed=int(config["run"]["seed"]), curve=curve,
        env_steps=int(summary.get("env_steps", curve[-1].env_steps)),
        minutes=float(summary.get("minutes", curve[-1].minutes)),
        host=starts[0].get("host", {}) if starts else {},
        milestones=[(int(r["env_steps"]), float(r["minutes"])) for r in agent if r.get("event") == "milestone"])


def collect(paths: list[Path], games: list[str] | None = None, seeds: list[int] | None = None,
            warn: Any = print) -> list[RunResult]:
    """Every usable run below `paths`, filtered to `games` (any spelling) and `seeds`; unusable ones are named via
    `warn` and skipped."""
    wanted = {atari100k_game(g) for g in games} if games else None
    runs = []
    for run_dir in find_run_dirs(paths):
        try:
            run = load_run(run_dir)
        except ReportError as e:
            warn(f"skipped {e}")
            continue
        if (wanted is None or run.game in wanted) and (seeds is None or run.seed in seeds):
            runs.append(run)
    return sorted(runs, key=lambda r: (r.game, r.seed, r.run_dir))


@dataclass
class GameRow:
    """One game's line of the table: our score over seeds and the references."""

    game: str
    seeds: int
    mean: float
    std: float  # population std over seeds (0 for one seed)
    hns: float
    efficientzero: float
    efficientzero_hns: float
    random: float
    human: float
    minutes_to_human: float | None  # median over the seeds that reached it
    reached_human: int  # seeds that reached the human score
    env_steps: int  # median env steps of the runs
    minutes: float  # median wall-clock minutes of the runs


def game_rows(runs: list[RunResult]) -> list[GameRow]:
    """Aggregate runs per game (sorted by game)."""
    rows = []
    for game in sorted({r.game for r in runs}):
        mine = [r for r in runs if r.game == game]
        scores = [r.score for r in mine]
        ref, ez = reference_scores(game), efficientzero_score(game)
        reached = [p.minutes for r in mine if (p := r.to_human()) is not None]
        mean = statistics.fmean(scores)
        rows.append(GameRow(
            game=game, seeds=len(mine), mean=mean, std=statistics.pstdev(scores),
            hns=human_normalized_score(game, mean), efficientzero=ez,
            efficientzero_hns=human_normalized_score(game, ez), random=ref.random, human=ref.human,
            minutes_to_human=statistics.median(reached) if reached else None, reached_human=len(reached),
            env_steps=int(statistics.median(r.env_steps for r in mine)),
            minutes=statistics.median(r.minutes for r in mine)))
    return rows


def summary_hns(rows: list[GameRow]) -> dict[str, float]:
    """Mean and median HNS over the games in `rows`, ours and EfficientZero's on the same games."""
    ours, ez = [r.hns for r in rows], [r.efficientzero_hns for r in rows]
    return {"mean_hns": statistics.fmean(ours), "median_hns": statistics.median(ours),
            "efficientzero_mean_hns": statistics.fmean(ez), "efficientzero_median_hns": statistics.median(ez)}


def markdown(rows: list[GameRow], runs: list[RunResult], figures: list[str]) -> str:
    """The report as markdown: the per-game table, mean/median HNS, the runs and the figures."""
    lines = ["| game | ours (mean ± std over seeds) | seeds | HNS | EfficientZero | EZ HNS | random | human "
             "| minutes to human | env steps | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        to_human = f"{r.minutes_to_human:.1f} ({r.reached_human}/{r.seeds})" if r.minutes_to_human is not None \
            else f"not reached (0/{r.seeds})"
        lines.append(f"| {r.game} | {r.mean:.1f} ± {r.std:.1f} | {r.seeds} | {r.hns:.3f} | {r.efficientzero:g} | "
                     f"{r.efficientzero_hns:.3f} | {r.random:g} | {r.human:g} | {to_human} | {r.env_steps} | "
                     f"{r.minutes:.1f} |")
    s = summary_hns(rows)
    lines += ["", f"Over {len(rows)} game(s): mean HNS {s['mean_hns']:.3f}, median HNS {s['median_hns']:.3f} "
              f"(EfficientZero on the same games: mean {s['efficientzero_mean_hns']:.3f}, median "
              f"{s['efficientzero_median_hns']:.3f}; on all 26: 1.943 / 1.090).", "",
              "| run | game | seed | last eval | env steps | minutes | env steps/min | host |",
              "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        host = ", ".join(filter(None, [run.host.get("cpu", "?"), f"{run.host.get('usable_cpus', '?')} cores",
                                       " + ".join(run.host.get("gpus", []))]))
        lines.append(f"| {run.run_dir} | {run.game} | {run.seed} | {run.score:.1f} | {run.env_steps} | "
                     f"{run.minutes:.1f} | {run.env_steps_per_minute:.0f} | {host} |")
    return "\n".join(lines + [""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]) + "\n"


def plot_curves(runs: list[RunResult], path: Path, x: str) -> Path:
    """One panel per game: each seed's evaluation score against `x` ("env_steps" or "minutes"), with the random
    (dotted) and human (dashed) scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({r.game for r in runs})
    cols = min(4, len(games))
    rows = (len(games) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, game in zip(axes.flat, games, strict=False):
        for run in (r for r in runs if r.game == game):
            ax.plot([getattr(p, x) for p in run.curve], [p.mean_return for p in run.curve], marker="o", ms=3,
                    label=f"seed {run.seed}")
        ref = reference_scores(game)
        ax.axhline(ref.human, ls="--", c="k", lw=0.8, label="human")
        ax.axhline(ref.random, ls=":", c="grey", lw=0.8, label="random")
        ax.set_title(game)
        ax.set_xlabel("env steps" if x == "env_steps" else "wall-clock minutes")
        ax.set_ylabel("eval return (raw)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(games):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs: list[RunResult], out: Path) -> Path:
    """report.md, report.json, curves_env_steps.png and curves_minutes.png in `out`; returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures = [str(plot_curves(runs, out / f"curves_{x}.png", x)) for x in ("env_steps", "minutes")]
    rows = game_rows(runs)
    (out / "report.json").write_text(json.dumps({"games": [asdict(r) for r in rows], **summary_hns(rows),
                                                 "runs": [asdict(r) for r in runs], "figures": figures}, indent=2))
    report = out / "report.md"
    report.write_text(markdown(rows, runs, figures))
    return report


def launch(games: list[str], seeds: list[int], root: Path, preset: str, inline: bool, sets: list[str]) -> None:
    """Run `run.py` once per game × seed (one after another) into root/<Game>-s<seed>; finished runs (with a
    summary.json) are kept."""
    for game in games:
        for seed in seeds:
            run_dir = root / f"{game}-s{seed}"
            if (run_dir / "summary.json").exists():
                print(f"[atari100k] {run_dir} is finished; kept", flush=True)
                continue
            cmd = [sys.executable, str(REPO / "run.py"), "--preset", preset, "--seed", str(seed), "--run-dir",
                   str(run_dir), "--set", f"env.id=atari:{game}", *(a for s in sets for a in ("--set", s))]
            print("[atari100k] " + " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd + (["--inline"] if inline else []), check=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="run directories, or folders holding them")
    p.add_argument("--games", nargs="+", help="only these games (e.g. Breakout MsPacman); all found by default")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    p.add_argument("--out", type=Path, default=Path("atari100k-report"), help="folder for the report and PNGs")
    p.add_argument("--launch", action="store_true", help="first run the missing --games × --seeds in --runs-root")
    p.add_argument("--runs-root", type=Path, default=Path("runs/atari100k"), help="where --launch puts runs")
    p.add_argument("--preset", default="atari100k", help="--launch: run.py preset")
    p.add_argument("--inline", action="store_true", help="--launch: run.py --inline")
    p.add_argument("--set", dest="sets", action="append", default=[], help="--launch: run.py --set (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.launch:
        if not args.games or not args.seeds:
            print("error: --launch needs --games and --seeds", file=sys.stderr)
            return 2
        launch(args.games, args.seeds, args.runs_root, args.preset, args.inline, args.sets)
        args.runs = [*args.runs, args.runs_root]
    try:
        runs = collect(args.runs or [Path("runs")], args.games, args.seeds)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print("error: no finished Atari 100k run directories found", file=sys.stderr)
        return 2
    report = write_report(runs, args.out)
    print(report.read_text())
    print(f"written {report}, {args.out / 'report.json'}, curves_env_steps.png and curves_minutes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
