"""The Atari evaluation protocol on the real ALE with a tiny network, and `run.py --evaluate` (one-line errors,
exit code 2 on bad input, GIF recording)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import run
from speedy.checkpoint import save_checkpoint
from speedy.components import build_model, search_config, task_spec
from speedy.config import Config, build_config
from speedy.evaluate import evaluate, make_eval_env
from speedy.search import ModelSearch

TINY = [
    "model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
    "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.mlp_latent=16",
    "model.mlp_hidden=[16]", "model.support_size=20", "env.frame_size=48", "eval.num_simulations=2",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (two threads on a busy 2-core CI machine are several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(game: str, max_frames: int) -> Config:
    return build_config("atari100k", overrides=[*TINY, f"env.id=atari:{game}", f"env.max_frames_eval={max_frames}"])


def write_checkpoint(run_dir: Path, config: Config) -> Path:
    torch.manual_seed(0)
    model = build_model(config, task_spec(config), torch.device("cpu"))
    return save_checkpoint(run_dir / "checkpoint.pt", {"model": model.state_dict(), "train_steps": 7,
                                                       "env_steps": 70}, config=asdict(config))


class SpyEnv:
    """The eval env, recording per step: actions, lives before and after, and the step's flags and rewards."""

    def __init__(self, env):  # noqa: ANN001
        self.env, self.spec, self.num_envs = env, env.spec, env.num_envs
        self.steps: list[dict] = []

    def reset(self, seed):  # noqa: ANN001
        return self.env.reset(seed)

    def step(self, actions):  # noqa: ANN001
        before = self.env.lives.copy()
        result = self.env.step(actions)
        self.steps.append({"actions": actions.copy(), "lives_before": before, "lives_after": self.env.lives.copy(),
                           "result": result})
        return result


class SpySearch:
    """The real search; records the root noise it was given and the visit counts it returned."""

    def __init__(self, search: ModelSearch) -> None:
        self.search, self.model = search, search.model
        self.calls: list[tuple[object, np.ndarray]] = []

    def run(self, obs, noise, seed):  # noqa: ANN001
        out = self.search.run(obs, noise, seed)
        self.calls.append((noise, out.visit_counts.copy()))
        return out


@pytest.mark.timeout(180)
def test_protocol_greedy_raw_scores_no_episodic_life_and_cap():
    """MsPacman (3 lives, 10-point pellets): greedy actions without noise, a lost life does not end the game,
    scores are the raw reward sums, and no game runs past the frame cap (2,400 frames = 600 agent steps)."""
    config = tiny_config("MsPacman", 2_400)
    model = build_model(config, task_spec(config), torch.device("cpu"))
    search = SpySearch(ModelSearch(model, search_config(config, task_spec(config), 2), torch.device("cpu")))
    env = SpyEnv(make_eval_env(config, 2, seed=5))
    try:
        result = evaluate(env, search, 2, seed=5)
    finally:
        env.env.close()
    assert result.episodes == 2
    for (noise, visits), step in zip(search.calls, env.steps, strict=True):
        assert noise is None
        chosen = visits[np.arange(len(visits)), step["actions"]]
        assert np.array_equal(chosen, visits.max(axis=1))  # argmax of the visit counts
    results = [s["result"] for s in env.steps]
    lost_life_kept_playing = any(np.any((s["lives_after"] < s["lives_before"]) & ~s["result"].game_over)
                                 for s in env.steps)
    assert lost_life_kept_playing, "a life was lost: the eval game must go on"
    assert not any(np.any(r.terminated & ~r.game_over) for r in results)  # terminated only at game over
    raw = np.array([r.raw_rewards for r in results])  # (steps, envs)
    firsts = [min(i for i, r in enumerate(results) if r.game_over[e]) for e in range(2)]  # each env's first game
    assert sorted(float(raw[: t + 1, e].sum()) for e, t in enumerate(firsts)) == sorted(result.returns)
    assert all(results[t].episode_lengths[e] <= 600 for e, t in enumerate(firsts))  # the cap
    assert raw.max() >= 10  # raw, not sign-clipped
    assert np.array_equal(np.array([r.rewards for r in results]), raw)

@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("breakout-run")
    write_checkpoint(run_dir, tiny_config("Breakout", 400))
    return run_dir


@pytest.mark.timeout(120)
def test_cli_evaluate_prints_scores_hns_and_records_gif(breakout_run: Path, tmp_path: Path, capsys):
    gif = tmp_path / "game.gif"
    assert run.main(["--evaluate", str(breakout_run), "--episodes", "2", "--record", str(gif)]) == 0
    out = capsys.readouterr().out
    assert "cap 400 raw frames (NOT the protocol's 108000)" in out and "no episodic life" in out
    assert "mean " in out and "HNS " in out and "EfficientZero 414.1" in out
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames > 1 and image.size == (144, 144)
    # greedy and seeded: the same seed replays the same games
    assert run.main(["--evaluate", str(breakout_run / "checkpoint.pt"), "--episodes", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == out.splitlines()[2]


def test_cli_evaluate_bad_inputs_one_line_exit_2(breakout_run: Path, tmp_path: Path, capsys):
    cartpole = build_config("cartpole", overrides=["model.support_size=20"])
    write_checkpoint(tmp_path / "cartpole", cartpole)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases = {
        str(tmp_path / "missing.pt"): "does not exist",
        str(tmp_path): "has no checkpoint.pt",
        str(tmp_path / "junk.pt"): "junk.pt",  # speedy.checkpoint's reason (not a zip: read as a refused pickle)
        str(tmp_path / "cartpole"): "not an Atari game",
    }
    for path, reason in cases.items():
        assert run.main(["--evaluate", path, "--episodes", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and reason in err, err
    assert run.main(["--evaluate", str(breakout_run), "--record", str(tmp_path / "x.mp4")]) == 2
    assert "only .gif" in capsys.readouterr().err
    assert run.main(["--evaluate", str(breakout_run), "--episodes", "0"]) == 2
