"""MinAtar (PyPI `minatar`, optional extra `.[minatar]`): registers its gymnasium ids on first use.

MinAtar's games (Breakout, SpaceInvaders, Asterix, Freeway, Seaquest) are 10×10×C boolean images. Its package
registers nothing by itself: gymnasium 1.x needs `minatar.gym.register_envs()` before
`gymnasium.make("MinAtar/Breakout-v1")`, which `register_minatar` calls the first time an id starting with
`MinAtar/` is resolved or made. The `-v1` ids use each game's minimal action set, `-v0` all 6 actions.

Protocol (MinAtar paper): sticky actions with probability 0.1 (the `sticky_action_prob` argument of its games, which
speedy sets from `env.sticky_action_prob`; the `minatar` preset uses 0.1), difficulty ramping on, raw integer rewards,
no step cap registered (speedy's `env.max_frames_train` / `env.max_frames_eval` cap the agent steps of an episode).
"""

from __future__ import annotations

import logging
from typing import Any

PREFIX = "MinAtar/"
INSTALL_HINT = ("pip install '.[minatar]' (or, without its plotting dependencies, "
                "pip install --no-deps minatar==1.0.15)")
_registered = False  # register_minatar has run in this process


def is_minatar(env_id: str) -> bool:
    """True for a gymnasium id of a MinAtar game, e.g. "MinAtar/Breakout-v1"."""
    return env_id.startswith(PREFIX)


def register_minatar(env_id: str) -> None:
    """Register MinAtar's gymnasium ids if `env_id` is one of them and they are not registered yet.

    Raises ValueError naming the install command when the `minatar` package is missing.
    """
    global _registered
    if not is_minatar(env_id) or _registered:
        return
    import gymnasium

    if env_id in gymnasium.registry:  # registered by the caller
        return
    previous = logging.root.manager.disable
    # minatar warns at import that seaborn (needed only to render) is missing: not our concern, and it is noise.
    logging.disable(logging.WARNING)
    try:
        import minatar.gym
    except ImportError as err:
        raise ValueError(f"{env_id} needs the MinAtar package, which is not installed ({err}): "
                         f"{INSTALL_HINT}") from err
    finally:
        logging.disable(previous)
    minatar.gym.register_envs()
    _registered = True


_ACTION_NAMES = {"n": "NOOP", "l": "LEFT", "u": "UP", "r": "RIGHT", "d": "DOWN", "f": "FIRE"}


def minatar_action_meanings(env: Any) -> tuple[str, ...]:
    """Names of a made env's actions in index order: MinAtar's, e.g. ("NOOP", "LEFT", "RIGHT") for Breakout-v1; else
    ACTION_0, ACTION_1, ..."""
    unwrapped = env.unwrapped
    try:
        letters, action_set = unwrapped.game.env.action_map, unwrapped.action_set
    except AttributeError:  # not MinAtar's BaseEnv
        return tuple(f"ACTION_{i}" for i in range(int(env.action_space.n)))
    return tuple(_ACTION_NAMES.get(letters[a], str(letters[a])) for a in action_set)
