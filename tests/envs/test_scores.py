"""Human-normalized score and the Atari 100k reference tables."""

from __future__ import annotations

import numpy as np
import pytest

from speedy.envs.ids import atari_rom_ids
from speedy.envs.scores import (
    ATARI_100K_SCORES,
    EFFICIENTZERO_SCORES,
    efficientzero_score,
    human_normalized_score,
    reference_scores,
)


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


def test_efficientzero_table_reproduces_the_papers_mean_and_median_hns():
    # Ye et al. 2021, Table 3: mean HNS 194.3 %, median 109.0 % over the 26 games.
    hns = [human_normalized_score(g, s) for g, s in EFFICIENTZERO_SCORES.items()]
    assert set(EFFICIENTZERO_SCORES) == set(ATARI_100K_SCORES)
    assert float(np.mean(hns)) == pytest.approx(1.943, abs=5e-4)
    assert float(np.median(hns)) == pytest.approx(1.090, abs=5e-4)
    assert efficientzero_score("atari:Breakout") == 414.1 and efficientzero_score("Pong") == 20.1


def test_hns_hand_values_other_games():
    # Qbert: (13781.9 − 163.9) / (13455.0 − 163.9) = 13618 / 13291.1
    assert human_normalized_score("Qbert", 13781.9) == pytest.approx(13618 / 13291.1, rel=1e-9)
    # Freeway has random 0: 14.8 / 29.6 = 0.5 exactly
    assert human_normalized_score("Freeway", 14.8) == pytest.approx(0.5, rel=1e-12)
    # below random is negative: (0 − 227.8) / (7127.7 − 227.8)
    assert human_normalized_score("Alien", 0.0) == pytest.approx(-0.0330150, rel=1e-5)
