"""Reference scores for the 26 Atari 100k games and the human-normalized score (HNS).

Random and human scores per game as tabulated by the DQN line of work (random agent / professional
human tester, 1-decimal values as printed in the SPR and EfficientZero papers).
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


def reference_scores(game: str) -> ReferenceScores:
    """Random and human scores of `game` (any accepted spelling: "Breakout", "atari:breakout", ...)."""
    name = game.split(":", 1)[1] if game.startswith("atari:") else game
    rom = atari_rom_name(name)
    if rom is None or rom not in ATARI_100K_SCORES:
        raise ValueError(
            f"no human/random reference score for game {game!r}; known (Atari 100k) games: {sorted(ATARI_100K_SCORES)}"
        )
    return ATARI_100K_SCORES[rom]


def human_normalized_score(game: str, score: float) -> float:
    """(score − random) / (human − random) for an Atari 100k game; ValueError if it has no reference."""
    ref = reference_scores(game)
    return (float(score) - ref.random) / (ref.human - ref.random)
