"""Human-normalized score and the Atari 100k reference tables."""

from __future__ import annotations

import pytest

from speedy.envs.ids import atari_rom_ids
from speedy.envs.scores import ATARI_100K_SCORES, human_normalized_score, reference_scores


def test_breakout_hand_values():
    assert human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized_score("breakout", 1.7) == pytest.approx(0.0)
    # EfficientZero's Breakout 414: (414 − 1.7) / (30.5 − 1.7) = 412.3 / 28.8
    assert human_normalized_score("ALE/Breakout-v5", 414.0) == pytest.approx(14.315972, rel=1e-6)


def test_pong_negative_random_score():
    # (0 − (−20.7)) / (14.6 − (−20.7)) = 20.7 / 35.3
    assert human_normalized_score("atari:pong", 0.0) == pytest.approx(0.586402, rel=1e-5)


def test_table_covers_the_26_games_with_real_rom_ids():
    assert len(ATARI_100K_SCORES) == 26
    assert set(ATARI_100K_SCORES) <= set(atari_rom_ids())
    assert all(ref.human > ref.random for ref in ATARI_100K_SCORES.values())
    assert reference_scores("MsPacman").human == 6951.6
    assert reference_scores("UpNDown").random == 533.4


@pytest.mark.parametrize("game", ["tetris", "SpaceInvaders", "CartPole-v1", "nonsense"])
def test_game_without_reference_raises(game):
    with pytest.raises(ValueError, match="no human/random reference score"):
        human_normalized_score(game, 1.0)
