"""How many positions a full replay buffer holds on a real Atari run (random actions, the training protocol with
episodic life), with capacity counted in positions (speedy.replay) and with the fixed-slot layout it replaced.

The fixed-slot layout kept `capacity // block_length` block slots and evicted by slot, so it held the positions of
the newest ⌊capacity / L⌋ blocks however short they were; that count is computed from the same block stream.

    python tools/replay_fill.py [--game Breakout] [--env-steps 120000] [--capacity 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info, host_line  # noqa: E402

from speedy.components import block_layout, task_spec  # noqa: E402
from speedy.config import build_config  # noqa: E402
from speedy.envs import make_vector_env  # noqa: E402
from speedy.replay import ReplayBuffer  # noqa: E402
from speedy.selfplay import SelfPlay, random_policy  # noqa: E402
from speedy.shm.frames import FrameStore  # noqa: E402


def fixed_slot_positions(lengths: list[int], capacity: int, block_length: int) -> int:
    """Positions the replaced layout held: those of the newest ⌊capacity / L⌋ blocks."""
    slots = max(1, capacity // block_length)
    return int(sum(lengths[-slots:]))


def fill(game: str, env_steps: int, capacity: int, num_envs: int, seed: int) -> dict:
    """Random actions on `game` (training protocol) for `env_steps` agent steps into a buffer of `capacity`."""
    config = build_config("atari100k", overrides=[f"env.id=atari:{game}", f"replay.capacity={capacity}"])
    spec = task_spec(config)
    layout = block_layout(config, spec)
    replay = ReplayBuffer(layout, capacity, config.replay.alpha, config.replay.priority_eps)
    env = make_vector_env(config.env.id, num_envs, seed=seed, mode="train", frame_size=config.env.frame_size,
                          max_frames_train=config.env.max_frames_train)
    # frames are never read here: a small store (oldest overwritten) keeps /dev/shm use low
    store = FrameStore.create(f"fill{os.getpid()}", "frames0", spec.frame_shape, spec.frame_dtype, 4096)
    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    episode_lengths: list[int] = []
    start = time.time()
    try:
        play = SelfPlay(env, store, 0, layout, seed)
        for step in range(0, env_steps, num_envs):
            actions, policies = random_policy(num_envs, spec.num_actions, rng)
            blocks, stats = play.step(actions, policies, step)
            episode_lengths += stats.episode_lengths
            for block in blocks:
                replay.add(block)
                lengths.append(block.length)
    finally:
        env.close()
        store.close()
    return {
        "game": game, "env_steps": env_steps, "capacity": capacity, "block_length": layout.block_length,
        "blocks": len(lengths), "mean_block_length": float(np.mean(lengths)),
        "games": len(episode_lengths),  # whole games (a training episode is one life)
        "held_positions": replay.num_positions,
        "held_positions_fixed_slots": fixed_slot_positions(lengths, capacity, layout.block_length),
        "seconds": time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--env-steps", type=int, default=120_000, help="agent steps (past capacity: buffer full)")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()
    result = fill(args.game, args.env_steps, args.capacity, args.num_envs, args.seed)
    result["host"] = host_info()
    if args.json:
        print(json.dumps(result))
        return
    print(host_line(result["host"]))
    print(f"{result['game']}: {result['env_steps']} random agent steps (episodic life) → {result['blocks']} blocks, "
          f"mean {result['mean_block_length']:.1f} positions, in {result['seconds']:.0f} s")
    for name, key in (("positions (this buffer)", "held_positions"),
                      ("fixed slots (replaced)", "held_positions_fixed_slots")):
        print(f"  {name:24s} {result[key]:7d} of {result['capacity']} "
              f"({100 * result[key] / result['capacity']:.1f} %)")


if __name__ == "__main__":
    main()
