"""Reference scores for the 26 Atari 100k games and the human-normalized score (HNS).

Sources:
- Random and human scores: the standard tables of the DQN line of work (random agent and professional human
  tester; Mnih et al. 2015 Nature, extended in Badia et al. 2020 "Agent57", Table H.1), with the 1-decimal values
  as printed in the Atari 100k papers (SPR, Schwarzer et al. 2021, Table 5; EfficientZero, Ye et al. 2021,
  Table 3). These two papers agree on every one of the 26 games.
- EfficientZero's per-game scores: Ye et al., "Mastering Atari Games with Limited Data", NeurIPS 2021, Table 3
  (mean over 3 seeds × 32 evaluation episodes after 100k agent steps). Written from that table; as a check,
  they give mean HNS 1.943 and median 1.090 with the random/human values below, the paper's 194.3 % and 109.0 %
  (tests/envs/test_scores.py). The paper prints one decimal; we have not re-checked each digit against the PDF.
HNS = (score − random) / (human − random): 0 is a random agent, 1 is the human tester.
"""

from __future__ import annotations

from dataclasses import dataclass

from speedy.envs.ids import atari_rom_name


@dataclass(frozen=True)
class ReferenceScores:
    """Raw game scores of a uniformly random agent and of the human tester for one game."""

    random: float
    human: float


# Keyed by ALE ROM id (snake_case), in the alphabetical order of the papers' tables.
ATARI_100K_SCORES: dict[str, ReferenceScores] = {
    "alien": ReferenceScores(random=227.8, human=7127.7),
    "amidar": ReferenceScores(random=5.8, human=1719.5),
    "assault": ReferenceScores(random=222.4, human=742.0),
    "asterix": ReferenceScores(random=210.0, human=8503.3),
    "bank_heist": ReferenceScores(random=14.2, human=753.1),
    "battle_zone": ReferenceScores(random=2360.0, human=37187.5),
    "boxing": ReferenceScores(random=0.1, human=12.1),
    "breakout": ReferenceScores(random=1.7, human=30.5),
    "chopper_command": ReferenceScores(random=811.0, human=7387.8),
    "crazy_climber": ReferenceScores(random=10780.5, human=35829.4),
    "demon_attack": ReferenceScores(random=152.1, human=1971.0),
    "freeway": ReferenceScores(random=0.0, human=29.6),
    "frostbite": ReferenceScores(random=65.2, human=4334.7),
    "gopher": ReferenceScores(random=257.6, human=2412.5),
    "hero": ReferenceScores(random=1027.0, human=30826.4),
    "jamesbond": ReferenceScores(random=29.0, human=302.8),
    "kangaroo": ReferenceScores(random=52.0, human=3035.0),
    "krull": ReferenceScores(random=1598.0, human=2665.5),
    "kung_fu_master": ReferenceScores(random=258.5, human=22736.3),
    "ms_pacman": ReferenceScores(random=307.3, human=6951.6),
    "pong": ReferenceScores(random=-20.7, human=14.6),
    "private_eye": ReferenceScores(random=24.9, human=69571.3),
    "qbert": ReferenceScores(random=163.9, human=13455.0),
    "road_runner": ReferenceScores(random=11.5, human=7845.0),
    "seaquest": ReferenceScores(random=68.4, human=42054.7),
    "up_n_down": ReferenceScores(random=533.4, human=11693.2),
}


# EfficientZero (Ye et al. 2021, Table 3): mean raw score after 100k agent steps, keyed like ATARI_100K_SCORES.
EFFICIENTZERO_SCORES: dict[str, float] = {
    "alien": 808.5, "amidar": 148.6, "assault": 1263.1, "asterix": 25557.8, "bank_heist": 351.0,
    "battle_zone": 13871.2, "boxing": 52.7, "breakout": 414.1, "chopper_command": 1117.3,
    "crazy_climber": 83940.2, "demon_attack": 13003.9, "freeway": 21.8, "frostbite": 296.3, "gopher": 3260.3,
    "hero": 9315.9, "jamesbond": 517.0, "kangaroo": 724.1, "krull": 5663.3, "kung_fu_master": 30944.8,
    "ms_pacman": 1281.2, "pong": 20.1, "private_eye": 96.7, "qbert": 13781.9, "road_runner": 17751.3,
    "seaquest": 1100.2, "up_n_down": 17264.2,
}


def atari100k_game(game: str) -> str:
    """The ROM id of an Atari 100k game in any accepted spelling ("Breakout", "atari:breakout", "ALE/Breakout-v5");
    ValueError naming the 26 games if `game` is not one of them."""
    name = game.split(":", 1)[1] if game.startswith("atari:") else game
    rom = atari_rom_name(name)
    if rom is None or rom not in ATARI_100K_SCORES:
        raise ValueError(
            f"no human/random reference score for game {game!r}; known (Atari 100k) games: {sorted(ATARI_100K_SCORES)}"
        )
    return rom


def reference_scores(game: str) -> ReferenceScores:
    """Random and human scores of `game` (any accepted spelling: "Breakout", "atari:breakout", ...)."""
    return ATARI_100K_SCORES[atari100k_game(game)]


def efficientzero_score(game: str) -> float:
    """EfficientZero's published mean raw score on `game` after 100k agent steps (ValueError if not Atari 100k)."""
    return EFFICIENTZERO_SCORES[atari100k_game(game)]


def human_normalized_score(game: str, score: float) -> float:
    """(score − random) / (human − random) for an Atari 100k game; ValueError if it has no reference."""
    ref = reference_scores(game)
    return (float(score) - ref.random) / (ref.human - ref.random)
