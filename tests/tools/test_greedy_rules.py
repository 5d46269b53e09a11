"""tools/greedy_rules.py: every greedy rule plays a real (tiny) finished run's weights on the same games."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tools.conftest import finish_tiny_cartpole_run, load_tool

gr = load_tool("greedy_rules")


@pytest.mark.timeout(120)
def test_every_rule_plays_a_finished_run(tmp_path: Path, capsys):
    finish_tiny_cartpole_run(tmp_path)
    assert gr.main([str(tmp_path), "--games", "3", "--threshold", "20", "--simulations", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["results"]
    assert [r["rule"] for r in rows] == ["visits", "completed_q", "one_step"] and report["threshold"] == 20
    for r in rows:
        assert r["games"] == len(r["returns"]) == 3 and r["simulations"] == 6
        assert r["mean_return"] == pytest.approx(sum(r["returns"]) / 3)
        assert r["below_threshold"] == sum(x < 20 for x in r["returns"]) and r["min_return"] == min(r["returns"])
    # games of one seed are the same games: a replay gives the same returns
    agent = gr.load_agent(tmp_path, gr.torch.device("cpu"), atari_only=False)
    assert gr.play_with_rule(agent, "visits", 3, 777, 6) == rows[0]["returns"]
    assert gr.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
