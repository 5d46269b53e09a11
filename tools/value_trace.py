"""Does the value function know what its own policy will get? Plays greedy evaluation games with a finished run's
checkpoint (as the evaluator does: the greedy action, no root noise) and prints, step by step, the network's value
v(s), the search's root value, the visits, and the discounted return the game actually paid from there on
(G_t = Σ γ^i r_{t+i}, γ the run's discount per agent step); then per game how far v is from G (mean |v − G|,
correlation, at the start and over the last steps).

This is how issue 10's CartPole stalls were told apart: with 5-step targets a drifting agent predicted 45-85 at the
start of games that paid 150-190, and 21 three steps before the end (values too flat); with 30-step targets
v tracked G within a few points, and the agent still ran off the track (the policy, not the values).

    python tools/value_trace.py RUN_DIR [--games 2] [--every 10] [--seed 0] [--json]

Vector observations are printed (first 4 components); Atari values are of clipped rewards, so G uses the clipped
reward there (`--raw` for the raw score).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info  # noqa: E402

from speedy.components import agent_discount, search_config, task_spec  # noqa: E402
from speedy.evaluate import make_eval_env  # noqa: E402
from speedy.evaluate_checkpoint import EvaluateError, load_agent  # noqa: E402
from speedy.obs import FrameStacker  # noqa: E402
from speedy.search import ModelSearch  # noqa: E402
from speedy.threads import flush_denormals  # noqa: E402


@dataclass
class Step:
    t: int
    observation: list[float]  # vector tasks: the first 4 components of the newest frame; images: []
    network_value: float
    root_value: float
    visits: list[int]
    action: int
    reward: float
    return_to_go: float = 0.0


@dataclass
class GameTrace:
    seed: int
    length: int
    score: float
    cut: bool  # the time limit ended it: G omits what the game would have paid after the cut
    steps: list[Step]
    mean_abs_error: float  # mean |v(s_t) − G_t| over the game
    correlation: float  # Pearson r of v(s_t) and G_t (NaN for a constant G)
    start_value: float
    start_return: float
    end_value: float  # mean v over the last 10 steps
    end_return: float  # mean G over the last 10 steps


def returns_to_go(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = Σ_i γ^i r_{t+i} for a finished game's rewards (T,) → (T,) float64."""
    out = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + discount * running
        out[t] = running
    return out


def play_traced(path: str | Path, seed: int, raw: bool = False) -> GameTrace:
    """One greedy game with the checkpoint at `path`, every step recorded, G computed once the game ended."""
    agent = load_agent(path, torch.device("cpu"), atari_only=False)
    config, spec = agent.config, task_spec(agent.config)
    search = ModelSearch(agent.model, search_config(config, spec, config.eval.num_simulations), torch.device("cpu"))
    env = make_eval_env(config, 1, seed)
    try:
        stacker = FrameStacker(1, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
        stacker.reset(env.reset(seed).frames)
        steps: list[Step] = []
        score, cut = float("nan"), False
        while np.isnan(score):
            frame = stacker.observation()[0]
            out = search.run(stacker.observation(), None, seed=seed + len(steps))
            actions = out.greedy_action
            result = env.step(actions)
            vector = frame.ndim == 1
            steps.append(Step(len(steps), [float(x) for x in frame[-4:]] if vector else [],
                              float(out.network_value[0]), float(out.root_value[0]),
                              [int(n) for n in out.visit_counts[0]], int(actions[0]),
                              float(result.raw_rewards[0] if raw else result.rewards[0])))
            if result.game_over[0]:
                score, cut = float(result.episode_returns[0]), bool(result.truncated[0])
            stacker.push(result.frames, result.terminated | result.truncated)
    finally:
        env.close()
    g = returns_to_go(np.array([s.reward for s in steps]), agent_discount(config, spec))
    v = np.array([s.network_value for s in steps])
    for step, ret in zip(steps, g, strict=True):
        step.return_to_go = float(ret)
    corr = float(np.corrcoef(v, g)[0, 1]) if len(steps) > 1 and g.std() > 0 and v.std() > 0 else float("nan")
    return GameTrace(seed, len(steps), score, cut, steps, float(np.abs(v - g).mean()), corr, float(v[0]), float(g[0]),
                     float(v[-10:].mean()), float(g[-10:].mean()))


def print_trace(trace: GameTrace, every: int) -> None:
    ending = "cut by the time limit (G omits what follows the cut)" if trace.cut else "game over"
    print(f"game seed {trace.seed}: {trace.length} steps, {ending}, score {trace.score:g}; mean |v − G| "
          f"{trace.mean_abs_error:.1f}, corr(v, G) {trace.correlation:.2f}; start v {trace.start_value:.1f} vs G "
          f"{trace.start_return:.1f}; last 10 steps v {trace.end_value:.1f} vs G {trace.end_return:.1f}")
    print(f"{'t':>5} {'observation':>30} {'v(s)':>7} {'root':>7} {'G':>7}  visits")
    for step in trace.steps:
        if step.t % every and step.t != trace.length - 1:
            continue
        obs = " ".join(f"{x:+.2f}" for x in step.observation)
        print(f"{step.t:5d} {obs:>30} {step.network_value:7.1f} {step.root_value:7.1f} {step.return_to_go:7.1f}  "
              f"{'/'.join(str(n) for n in step.visits)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory or a checkpoint file")
    parser.add_argument("--games", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="first game's seed (game i: seed + i)")
    parser.add_argument("--every", type=int, default=10, help="print every this many steps (and the last)")
    parser.add_argument("--raw", action="store_true", help="G from raw (unclipped) rewards")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.games < 1 or args.every < 1:
        parser.error("--games and --every must be >= 1")
    flush_denormals()
    torch.set_num_threads(1)
    try:
        traces = [play_traced(args.run, args.seed + i, args.raw) for i in range(args.games)]
    except EvaluateError as e:
        print(f"value_trace: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"host": host_info(), "run": str(args.run), "games": [asdict(t) for t in traces]}))
    else:
        for trace in traces:
            print_trace(trace, args.every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
