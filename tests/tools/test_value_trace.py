"""tools/value_trace.py: discounted returns-to-go by hand, and a traced greedy game from a real (tiny) run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.tools.conftest import finish_tiny_cartpole_run, load_tool

vt = load_tool("value_trace")


def test_returns_to_go_by_hand():
    g = vt.returns_to_go(np.array([1.0, 0.0, 2.0]), 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2.0])


@pytest.mark.timeout(120)
def test_traces_a_game_of_a_finished_run(tmp_path: Path, capsys):
    finish_tiny_cartpole_run(tmp_path)
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
