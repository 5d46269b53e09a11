"""Atari with the EfficientZero protocol on ALE's threaded C++ vector env (`ale_py.vector_env`).

What the C++ env does for us (checked in tests/envs/test_atari.py against a hand-run ALEInterface):
frame skip 4 with a max-pool of the last two raw frames, RGB resize to frame_size² with area
interpolation, no-op starts, minimal action set, sticky actions (optional), the frame cap, and
same-step autoreset at game over / frame cap.

What we do here: sign-clipping of rewards (the C++ clip would hide raw scores), episodic life
(the C++ `life_loss_info` flag reports a life loss as terminated without resetting the game, so the
next training episode starts from the frame after the loss; the C++ `episodic_life` flag instead
resets the whole game and is NOT used), game-over detection, score and length bookkeeping.

Known deviations from EfficientZero's baselines-style wrappers (both judged harmless):
- ALE draws 0..noop_max-1 no-op frames after a reset (baselines' NoopResetEnv: 1..noop_max), so the
  30 start offsets are one raw frame earlier.
- After a life loss the next training episode starts at the frame of the life-loss step; baselines'
  EpisodicLifeEnv first plays one extra NOOP step (4 frames) that no trajectory records.
The frame cap counts raw emulator frames since the real reset, not since the last life loss, as
EfficientZero's TimeLimit (inside EpisodicLifeEnv) does: 12_000 frames = 3_000 agent steps per game.
"""

from __future__ import annotations

import functools

import numpy as np

from speedy.envs.types import EnvSpec, EpisodeTracker, VecStep, check_actions, env_seeds, reset_step

FRAME_SKIP = 4
NOOP_MAX = 30
ATARI_FRAME_STACK = 4


def clip_reward(raw_rewards: np.ndarray) -> np.ndarray:
    """Sign-clip rewards: (N,) any numeric → (N,) float32 in {-1, 0, 1}."""
    return np.sign(np.asarray(raw_rewards, dtype=np.float32)).astype(np.float32)


@functools.cache
def atari_action_meanings(rom: str) -> tuple[str, ...]:
    """Names of the minimal action set of ROM `rom` (e.g. ("NOOP", "FIRE", "RIGHT", "LEFT"))."""
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(roms.get_rom_path(rom))
    return tuple(action.name for action in ale.getMinimalActionSet())


def atari_spec(rom: str, frame_size: int = 96) -> EnvSpec:
    """EnvSpec of ROM `rom` with (3, frame_size, frame_size) uint8 frames."""
    if frame_size < 8:
        raise ValueError(f"frame_size must be >= 8 pixels, got {frame_size}")
    meanings = atari_action_meanings(rom)
    return EnvSpec(
        env_id=f"atari:{rom}",
        kind="atari",
        frame_shape=(3, frame_size, frame_size),
        frame_dtype=np.dtype(np.uint8),
        frame_stack=ATARI_FRAME_STACK,
        num_actions=len(meanings),
        action_meanings=meanings,
    )


class AtariVecEnv:
    """N Atari games on ALE's C++ vector env; implements `speedy.envs.types.VectorEnv`.

    train=True: episodic life (life loss → terminated) and sign-clipped `rewards`.
    train=False: raw rewards, terminated only at game over.
    max_frames: raw-frame cap per game (12_000 train / 108_000 eval in the protocol).
    seed: stored as `self.seed` for the caller's `reset(self.seed)`; nothing is random before reset.
    After each step `lives` (N,) int32 and `episode_frame_numbers` (N,) int32 (raw frames since the
    game's reset, no-ops included) describe the current game of each env.
    """

    def __init__(
        self,
        spec: EnvSpec,
        num_envs: int,
        *,
        train: bool,
        max_frames: int,
        sticky_action_prob: float = 0.0,
        num_threads: int = 1,
        seed: int = 0,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_frames < FRAME_SKIP:
            raise ValueError(f"max_frames must be >= {FRAME_SKIP} raw frames, got {max_frames}")
        if not 0.0 <= sticky_action_prob < 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1), got {sticky_action_prob}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.spec = spec
        self.num_envs = num_envs
        self.seed = seed  # suggested argument for reset(); construction itself is unseeded
        self.train = train
        self.max_frames = max_frames
        _, height, width = spec.frame_shape
        self._env = AtariVectorEnv(
            spec.env_id.split(":", 1)[1],
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=max_frames,
            repeat_action_probability=sticky_action_prob,
            full_action_space=False,
            autoreset_mode="SameStep",
            img_height=height,
            img_width=width,
            grayscale=False,
            stack_num=1,
            frameskip=FRAME_SKIP,
            maxpool=True,
            noop_max=NOOP_MAX,
            episodic_life=False,
            life_loss_info=train,
            reward_clipping=False,
            use_fire_reset=False,
        )
        self._episodes = EpisodeTracker(num_envs)
        self.lives = np.zeros(num_envs, np.int32)
        self.episode_frame_numbers = np.zeros(num_envs, np.int32)
        self._started = False

    @staticmethod
    def _frames(obs: np.ndarray) -> np.ndarray:
        """(N, 1, H, W, 3) uint8 from ALE → (N, 3, H, W) uint8 contiguous."""
        return np.ascontiguousarray(obs[:, 0].transpose(0, 3, 1, 2))

    def reset(self, seed: int) -> VecStep:
        """Start a new game (with a random no-op start) in every env; seeds derive from `seed`."""
        obs, info = self._env.reset(seed=env_seeds(seed, self.num_envs))
        self._episodes.reset()
        self.lives = info["lives"].astype(np.int32)
        self.episode_frame_numbers = info["episode_frame_number"].astype(np.int32)
        self._started = True
        return reset_step(self._frames(obs))

    def step(self, actions: np.ndarray) -> VecStep:
        """Apply one action (4 raw frames) per env; see `VecStep` for the meaning of each field."""
        if not self._started:
            raise RuntimeError("call reset(seed) before step()")
        actions = check_actions(actions, self.num_envs, self.spec.num_actions)
        obs, rewards, terminated, truncated, info = self._env.step(actions.astype(np.int64))
        frame_numbers = info["episode_frame_number"].astype(np.int32)
        # With life_loss_info a life loss is reported as terminated but the game goes on: its frame
        # counter advanced by exactly FRAME_SKIP. A real end was followed by a reset (SameStep
        # autoreset), which restarts the counter at the no-op count (the lives count cannot tell:
        # bonus lives can leave more lives before a game over than after the reset).
        kept_playing = frame_numbers == self.episode_frame_numbers + FRAME_SKIP
        game_over = (terminated | truncated) & ~kept_playing
        raw = rewards.astype(np.float32)
        ep_returns, ep_lengths = self._episodes.update(raw, game_over)
        # The C++ env reports a life loss on the capped step as terminated, not truncated: re-derive.
        truncated = truncated | (game_over & (ep_lengths * FRAME_SKIP >= self.max_frames))
        self.lives = info["lives"].astype(np.int32)
        self.episode_frame_numbers = frame_numbers
        return VecStep(
            frames=self._frames(obs),
            rewards=clip_reward(raw) if self.train else raw.copy(),
            raw_rewards=raw,
            terminated=terminated.astype(bool),
            truncated=truncated.astype(bool),
            game_over=game_over,
            episode_returns=ep_returns,
            episode_lengths=ep_lengths,
        )

    def close(self) -> None:
        """Stop the C++ worker threads."""
        if self._env is not None:
            self._env.close()
            self._env = None
