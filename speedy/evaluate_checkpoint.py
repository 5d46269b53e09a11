"""`run.py --evaluate CHECKPOINT_OR_RUN_DIR`: play a trained agent on the Atari 100k evaluation protocol.

Protocol (DESIGN §3, EfficientZero's released evaluation): every action is the argmax of the visit counts of a
search with `eval.num_simulations` simulations and no Dirichlet noise; games end only at game over (no episodic
life) or at `env.max_frames_eval` raw frames (108,000 = 30 minutes of play in the protocol); scores are raw (not
clipped); up to 30 no-op starts; the run's sticky-action setting (0 in the protocol). The checkpoint's own config
decides the network, the task and these settings; the checkpoint is loaded with speedy.checkpoint (tensors and
plain values only, nothing in it can run code).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speedy.checkpoint import CHECKPOINT_NAME, CheckpointError, load_latest
from speedy.components import build_model, resolve_device, search_config, task_spec
from speedy.config import Config, ConfigError, config_from_dict
from speedy.envs.scores import efficientzero_score, reference_scores
from speedy.evaluate import EvalResult, evaluate, make_eval_env
from speedy.model import EfficientZeroNet
from speedy.search import ModelSearch

PROTOCOL_MAX_FRAMES = 108_000


class EvaluateError(RuntimeError):
    """An input `--evaluate` cannot use; the message is one line naming the file and the problem."""


@dataclass
class LoadedAgent:
    """A checkpoint's network (eval mode, on `device`) and the config it was trained with."""

    config: Config
    model: EfficientZeroNet
    train_steps: int
    env_steps: int
    path: Path


def checkpoint_file(path: str | Path) -> Path:
    """A run directory → its checkpoint.pt; a file → itself. EvaluateError if neither exists."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        if not path.exists() and not path.with_name(path.name + ".prev").exists():
            raise EvaluateError(f"{path.parent} has no {CHECKPOINT_NAME} (not a finished speedy run directory?)")
    elif not path.exists():
        raise EvaluateError(f"{path} does not exist")
    return path


def load_agent(path: str | Path, device: torch.device, atari_only: bool = True) -> LoadedAgent:
    """Load a checkpoint (or a run directory's newest usable one); EvaluateError if the file is unusable, has no
    config, is not an Atari task (unless `atari_only` is False), or its weights do not fit its config's network."""
    file = checkpoint_file(path)
    try:
        record = load_latest(file, "cpu")
        config = config_from_dict(json.loads(record["config"]))
    except CheckpointError as e:
        raise EvaluateError(str(e)) from e
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise EvaluateError(f"{file} has no usable config ({type(e).__name__}: {e})") from e
    if atari_only and not config.env.id.startswith("atari:"):
        raise EvaluateError(f"{file} was trained on {config.env.id}, not an Atari game: --evaluate plays the Atari "
                            f"100k protocol")
    model = build_model(config, task_spec(config), device)
    try:
        # the weights the evaluator played: its own average (eval.ema_decay), else the acting ones
        model.load_state_dict(record.get("eval_model") or record.get("acting_model") or record["model"])
    except (KeyError, RuntimeError) as e:
        raise EvaluateError(f"{file}: its weights do not fit its config's network ({str(e).splitlines()[0]})") from e
    model.eval()
    return LoadedAgent(config, model, int(record.get("train_steps", 0)), int(record.get("env_steps", 0)), file)


def play(agent: LoadedAgent, episodes: int, seed: int, record: list[np.ndarray] | None = None) -> EvalResult:
    """`episodes` games of the evaluation protocol with the agent's network (frames of the first into `record`)."""
    config = agent.config
    device = next(agent.model.parameters()).device
    search = ModelSearch(agent.model, search_config(config, task_spec(config), config.eval.num_simulations), device)
    env = make_eval_env(config, episodes, seed)
    try:
        return evaluate(env, search, episodes, seed, record=record)
    finally:
        env.close()


def write_animation(frames: list[np.ndarray], path: str | Path, fps: float = 15.0, scale: int = 3) -> Path:
    """Write frames (C, H, W) uint8 RGB as an animated GIF, each pixel scale × scale; `fps` frames per second
    (15 = the agent's decision rate at frame skip 4 is 60/4). Only .gif (Pillow); EvaluateError otherwise."""
    from PIL import Image

    path = check_record_path(path)
    images = [Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0))).resize(
        (f.shape[2] * scale, f.shape[1] * scale), Image.NEAREST) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def check_record_path(path: str | Path) -> Path:
    """EvaluateError unless `path` is a .gif and Pillow is installed (checked before any game is played)."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise EvaluateError(f"--record {path}: only .gif is supported (Pillow writes it without extra codecs)")
    try:
        import PIL  # noqa: F401
    except ImportError as e:
        raise EvaluateError("--record needs Pillow: pip install 'speedy[tools]'") from e
    return path


def greedy_rule_words(config: Config) -> str:
    """How the greedy action is chosen, in words (the protocol's rule is the argmax of the visit counts)."""
    if config.mcts.greedy_action == "visits":
        return "argmax of visit counts"
    return f"mcts.greedy_action = {config.mcts.greedy_action!r}, NOT the protocol's argmax of visit counts"


def protocol_line(config: Config, episodes: int) -> str:
    """The settings an evaluation used, in one line (with a warning if they are not the Atari 100k protocol)."""
    cap = config.env.max_frames_eval
    warn = "" if cap == PROTOCOL_MAX_FRAMES else f" (NOT the protocol's {PROTOCOL_MAX_FRAMES})"
    return (f"protocol: {episodes} episodes, greedy ({greedy_rule_words(config)}, {config.eval.num_simulations} "
            f"simulations, no Dirichlet noise), cap {cap} raw frames{warn}, no episodic life, raw score, "
            f"up to 30 no-op starts, sticky actions {config.env.sticky_action_prob}")


def score_lines(game: str, result: EvalResult) -> list[str]:
    """Raw scores, mean ± std over episodes, and HNS with the random/human/EfficientZero references."""
    lines = ["scores: " + " ".join(f"{s:g}" for s in result.returns),
             f"mean {result.mean_return:.2f} ± {result.std_return:.2f} (std over {result.episodes} episodes), "
             f"min {result.min_return:g}, max {result.max_return:g}, mean length {result.mean_length:.0f} steps"]
    try:
        ref, ez = reference_scores(game), efficientzero_score(game)
    except ValueError:
        return [*lines, f"HNS: n/a ({game} is not one of the 26 Atari 100k games)"]
    lines.append(f"HNS {result.human_normalized:.3f} (random {ref.random:g}, human {ref.human:g}; "
                 f"EfficientZero {ez:g} = HNS {(ez - ref.random) / (ref.human - ref.random):.3f})")
    return lines


def evaluate_main(path: str, episodes: int, seed: int | None, record_path: str | None) -> int:
    """The `--evaluate` command: prints the protocol, raw scores, mean ± std and HNS; 2 on bad input."""
    if episodes < 1:
        print(f"error: --episodes must be >= 1, got {episodes}", file=sys.stderr)
        return 2
    try:
        if record_path is not None:
            check_record_path(record_path)
        agent = load_agent(path, resolve_device("auto"))
    except EvaluateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = agent.config
    print(f"evaluate {agent.path}: {config.env.id}, train step {agent.train_steps}, env step {agent.env_steps}")
    print(protocol_line(config, episodes), flush=True)
    frames: list[np.ndarray] | None = [] if record_path else None
    result = play(agent, episodes, config.run.seed + 777 if seed is None else seed, frames)
    print("\n".join(score_lines(config.env.id, result)))
    if record_path and frames:
        out = write_animation(frames, record_path)
        print(f"recorded {len(frames)} frames of the first episode to {out}")
    return 0
