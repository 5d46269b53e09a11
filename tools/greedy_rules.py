"""Which greedy action rule plays a finished run's weights better? Plays the same evaluation games with each rule of
`mcts.greedy_action` (speedy/mcts/policy.py: "visits", the most-visited root child, EfficientZero; "completed_q",
Gumbel MuZero's argmax of prior logits + σ(completed Q)) on the same search (the run's `eval.num_simulations`
unless `--simulations`), and prints per run and rule the mean return, how many games ended below `--threshold`,
and the lowest return.

Issue 10's CartPole runs that lost evaluation games were told apart this way: with 25 simulations the visits follow
the prior, and on some checkpoints the searched Q knew better (docs/benchmarks.md, eighth session).

    python tools/greedy_rules.py RUN_DIR [RUN_DIR ...] [--games 24] [--threshold 475] [--seed 777] [--json]

Games of one run start from the same seeds under every rule (`--seed`; the evaluator's own seeds differ).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info  # noqa: E402

from speedy.components import search_config, task_spec  # noqa: E402
from speedy.evaluate import evaluate, make_eval_env  # noqa: E402
from speedy.evaluate_checkpoint import EvaluateError, LoadedAgent, load_agent  # noqa: E402
from speedy.mcts import GREEDY_RULES  # noqa: E402
from speedy.search import ModelSearch  # noqa: E402
from speedy.threads import flush_denormals  # noqa: E402


@dataclass
class RuleResult:
    run: str
    rule: str
    simulations: int
    games: int
    mean_return: float
    below_threshold: int  # games that ended below --threshold
    min_return: float
    returns: list[float]


def play_with_rule(agent: LoadedAgent, rule: str, games: int, seed: int, simulations: int) -> list[float]:
    """`games` evaluation games (speedy.evaluate: 8 at a time, no root noise) acting by `rule`; their returns."""
    config = agent.config
    device = next(agent.model.parameters()).device
    settings = dataclasses.replace(search_config(config, task_spec(config), simulations), greedy_rule=rule)
    env = make_eval_env(config, games, seed)
    try:
        return evaluate(env, ModelSearch(agent.model, settings, device), games, seed).returns
    finally:
        env.close()


def compare(run: str, games: int, seed: int, threshold: float, simulations: int | None) -> list[RuleResult]:
    agent = load_agent(run, torch.device("cpu"), atari_only=False)
    sims = simulations or agent.config.eval.num_simulations
    results = []
    for rule in GREEDY_RULES:
        returns = play_with_rule(agent, rule, games, seed, sims)
        scores = np.asarray(returns)
        results.append(RuleResult(run, rule, sims, games, float(scores.mean()), int((scores < threshold).sum()),
                                  float(scores.min()), returns))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories or checkpoint files")
    parser.add_argument("--games", type=int, default=24)
    parser.add_argument("--threshold", type=float, default=475.0, help="a game below this counts as lost")
    parser.add_argument("--seed", type=int, default=777, help="seed of the evaluation envs (the same for each rule)")
    parser.add_argument("--simulations", type=int, help="search budget (default: the run's eval.num_simulations)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.games < 1:
        parser.error(f"--games must be >= 1, got {args.games}")
    torch.set_num_threads(1)
    flush_denormals()
    results: list[RuleResult] = []
    for run in args.runs:
        try:
            rows = compare(run, args.games, args.seed, args.threshold, args.simulations)
        except EvaluateError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results.extend(rows)
        if not args.json:
            for r in rows:
                print(f"{r.run}  {r.rule:12s} {r.simulations} simulations  mean {r.mean_return:7.1f}  below "
                      f"{args.threshold:g}: {r.below_threshold:3d}/{r.games}  min {r.min_return:6.1f}", flush=True)
    if args.json:
        print(json.dumps({"host": host_info(), "threshold": args.threshold, "seed": args.seed,
                          "results": [asdict(r) for r in results]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
