"""Resolve user-facing task ids to a canonical (kind, name) pair.

Accepted Atari spellings (all → ROM "breakout"): "Breakout", "breakout", "BreakoutNoFrameskip-v4",
"ALE/Breakout-v5", "atari:breakout". Gymnasium: any registered id, e.g. "CartPole-v1" or
"gym:CartPole-v1"; MinAtar's "MinAtar/<Game>-v1" ids are registered on first use (speedy/envs/minatar_env.py).
Unknown ids raise ValueError with the closest valid names.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from speedy.envs.minatar_env import register_minatar

_ATARI_SUFFIX = re.compile(r"(NoFrameskip|Deterministic)?(-v\d+)?$")


@dataclass(frozen=True)
class ResolvedId:
    """A task id after resolution: kind "atari" (name = ROM id) or "gym" (name = registry id)."""

    kind: str
    name: str

    @property
    def canonical(self) -> str:
        """Canonical id string, e.g. "atari:breakout" or "gym:CartPole-v1"."""
        return f"{self.kind}:{self.name}"


@functools.cache
def atari_rom_ids() -> tuple[str, ...]:
    """All ROM ids shipped with ale_py, snake_case (e.g. "ms_pacman")."""
    from ale_py import roms

    return tuple(sorted(roms.get_all_rom_ids()))


def _squash(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def atari_rom_name(game: str) -> str | None:
    """The ROM id for an Atari game spelled in any accepted way, or None if there is no such ROM."""
    name = game.strip()
    if name.lower().startswith("ale/"):
        name = name[4:]
    name = _ATARI_SUFFIX.sub("", name)
    by_squashed = {_squash(rom): rom for rom in atari_rom_ids()}
    return by_squashed.get(_squash(name))


def _gym_registry() -> dict:
    import ale_py  # noqa: F401  (registers the ALE ids so that they are recognised as Atari)
    import gymnasium

    return gymnasium.registry


def _is_atari_gym_id(env_id: str) -> bool:
    entry = _gym_registry().get(env_id)
    return entry is not None and str(entry.entry_point).startswith("ale_py")


def unknown_atari_error(game: str) -> ValueError:
    """ValueError for an unknown Atari game naming the closest ROM ids and how to list them all."""
    close = difflib.get_close_matches(_squash(game), atari_rom_ids(), n=5, cutoff=0.5)
    return ValueError(
        f"unknown Atari game {game!r}; closest ROM names: {close or 'none'}. "
        "All ids: `python -c 'from ale_py import roms; print(roms.get_all_rom_ids())'`"
    )


def unknown_gym_error(env_id: str) -> ValueError:
    """ValueError for an unknown gymnasium id naming close matches and how to list the registry."""
    close = difflib.get_close_matches(env_id, list(_gym_registry().keys()), n=5, cutoff=0.5)
    return ValueError(
        f"unknown gymnasium env id {env_id!r}; close matches: {close or 'none'}. "
        "List all ids with `python -c 'import gymnasium; gymnasium.pprint_registry()'`"
    )


def resolve_env_id(env_id: str) -> ResolvedId:
    """Map any accepted spelling of a task to its `ResolvedId`; ValueError (with suggestions) if unknown.

    Order: explicit "atari:"/"gym:" prefix; ALE-style ids ("ALE/...", "...NoFrameskip-v4", ids that the
    gymnasium registry maps to ale_py); other gymnasium registry ids; finally bare ROM names.
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise ValueError(f"env_id must be a non-empty string, got {env_id!r}")
    env_id = env_id.strip()
    prefix, sep, rest = env_id.partition(":")
    register_minatar(rest if sep and prefix == "gym" else env_id)
    if sep and prefix in ("atari", "gym"):
        if prefix == "atari":
            rom = atari_rom_name(rest)
            if rom is None:
                raise unknown_atari_error(rest)
            return ResolvedId("atari", rom)
        if rest not in _gym_registry():
            raise unknown_gym_error(rest)
        return ResolvedId("gym", rest)
    looks_atari = env_id.lower().startswith("ale/") or _is_atari_gym_id(env_id)
    if not looks_atari and env_id in _gym_registry():
        return ResolvedId("gym", env_id)
    rom = atari_rom_name(env_id)
    if rom is not None:
        return ResolvedId("atari", rom)
    if looks_atari:
        raise unknown_atari_error(env_id)
    raise ValueError(
        f"unknown env id {env_id!r}: neither a gymnasium id nor an Atari game.\n"
        f"  gymnasium: {unknown_gym_error(env_id)}\n  Atari: {unknown_atari_error(env_id)}"
    )
