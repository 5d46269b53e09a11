"""Task id resolution: every accepted spelling maps to one canonical id."""

from __future__ import annotations

import pytest

from speedy.envs import env_spec
from speedy.envs.ids import resolve_env_id


@pytest.mark.parametrize(
    "spelling",
    ["Breakout", "breakout", "BreakoutNoFrameskip-v4", "ALE/Breakout-v5", "atari:breakout", "Breakout-v4"],
)
def test_breakout_spellings(spelling):
    assert resolve_env_id(spelling).canonical == "atari:breakout"


@pytest.mark.parametrize(
    ("spelling", "rom"),
    [
        ("MsPacman", "ms_pacman"),
        ("UpNDown", "up_n_down"),
        ("KungFuMasterNoFrameskip-v4", "kung_fu_master"),
        ("ALE/PrivateEye-v5", "private_eye"),
        ("road_runner", "road_runner"),
    ],
)
def test_camel_case_games(spelling, rom):
    assert resolve_env_id(spelling).name == rom


@pytest.mark.parametrize("spelling", ["CartPole-v1", "gym:CartPole-v1"])
def test_gym_ids(spelling):
    resolved = resolve_env_id(spelling)
    assert (resolved.kind, resolved.canonical) == ("gym", "gym:CartPole-v1")


def test_spec_is_canonical_for_any_spelling():
    assert env_spec("ALE/Pong-v5") == env_spec("pong")
    assert env_spec("Pong").env_id == "atari:pong"


def test_unknown_everything_lists_both_registries():
    with pytest.raises(ValueError) as info:
        resolve_env_id("NoSuchThing-v9")
    text = str(info.value)
    assert "pprint_registry" in text and "get_all_rom_ids" in text


def test_empty_id():
    with pytest.raises(ValueError, match="non-empty"):
        resolve_env_id("  ")
