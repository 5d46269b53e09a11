"""tools/value_trace.py: discounted returns-to-go by hand, and a traced greedy game from a real (tiny) run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speedy.config import build_config
from speedy.inline import run_inline
from tests.core.test_inline_smoke import TINY_MODEL
from tests.tools.conftest import load_tool

vt = load_tool("value_trace")


def test_returns_to_go_by_hand():
    g = vt.returns_to_go(np.array([1.0, 0.0, 2.0]), 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2.0])


@pytest.mark.timeout(120)
def test_traces_a_game_of_a_finished_run(tmp_path: Path, capsys):
    config = build_config("cartpole", overrides=[
        *TINY_MODEL, "run.max_env_steps=300", "train.training_steps=20", "replay.block_length=16",
        "replay.start_env_steps=64", "train.batch_size=8", "eval.episodes=1", "eval.interval=20",
        "mcts.num_simulations=4", "eval.num_simulations=4", "run.stop_eval_return=0"])
    run_inline(config, tmp_path, log=False)
    assert vt.main([str(tmp_path), "--games", "2", "--json"]) == 0
    games = json.loads(capsys.readouterr().out)["games"]
    assert [g["seed"] for g in games] == [0, 1]
    for game in games:
        steps = game["steps"]
        assert game["length"] == len(steps) == game["score"]  # CartPole pays 1 per step
        assert [s["t"] for s in steps] == list(range(len(steps)))
        assert all(sum(s["visits"]) == 4 and len(s["observation"]) == 4 for s in steps)
        assert steps[-1]["return_to_go"] == 1.0 and not game["cut"]  # a short game of an untrained agent
        assert game["start_return"] == pytest.approx(steps[0]["return_to_go"])
    assert vt.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
