"""Gymnasium image observations (H×W×C, any dtype) through the conv network; MinAtar's optional registration."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from speedy.augment import build_augmentation
from speedy.components import build_model, env_options, network_spec, task_spec
from speedy.config import ConfigError, build_config
from speedy.envs import env_spec, make_vector_env, minatar_env
from speedy.envs.gym_env import check_gym_spaces, frame_encoder
from speedy.envs.ids import resolve_env_id
from speedy.inline import run_inline
from speedy.model.network import ConvBody
from speedy.obs import FrameStacker
from tests.core.test_inline_smoke import TINY_MODEL

REPO = Path(__file__).resolve().parents[2]
CATCH_ID = "SpeedyTest/Catch-v0"
HAVE_MINATAR = importlib.util.find_spec("minatar") is not None


class Catch(gymnasium.Env):
    """A 10×10 boolean catch game: channel 0 the paddle on the bottom row, channel 1 a falling ball, channels 2-3
    empty; actions stay / left / right; +1 for a caught ball, −1 for a missed one; 3 balls per episode."""

    observation_space = spaces.Box(0, 1, (10, 10, 4), bool)
    action_space = spaces.Discrete(3)

    def __init__(self, sticky_action_prob: float = 0.0) -> None:
        self.sticky_action_prob = sticky_action_prob

    def _obs(self) -> np.ndarray:
        obs = np.zeros((10, 10, 4), bool)
        obs[9, self.paddle, 0] = True
        obs[self.ball_row, self.ball_col, 1] = True
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.paddle, self.balls = 5, 0
        self.ball_row, self.ball_col = 0, int(self.np_random.integers(10))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.paddle = int(np.clip(self.paddle + (0, -1, 1)[int(action)], 0, 9))
        self.ball_row += 1
        reward = 0.0
        if self.ball_row == 9:
            reward = 1.0 if self.ball_col == self.paddle else -1.0
            self.balls += 1
            self.ball_row, self.ball_col = 0, int(self.np_random.integers(10))
        return self._obs(), reward, self.balls == 3, False, {}


if CATCH_ID not in gymnasium.registry:
    gymnasium.register(CATCH_ID, entry_point=Catch)


def test_bool_image_spec_frames_and_stack():
    spec = env_spec(f"gym:{CATCH_ID}")
    assert (spec.kind, spec.frame_shape, spec.frame_dtype, spec.frame_stack) == ("gym", (4, 10, 10), np.uint8, 4)
    assert env_spec(f"gym:{CATCH_ID}", frame_stack=2).frame_stack == 2
    env = make_vector_env(f"gym:{CATCH_ID}", 3, seed=0, mode="train", frame_stack=2)
    try:
        first = env.reset(0).frames
        assert first.shape == (3, 4, 10, 10) and first.dtype == np.uint8
        assert set(np.unique(first)) == {0, 255}  # bool → 0 / 255, the conv body's / 255 makes it 0 / 1
        assert (first[:, 0, 9].sum(axis=1) == 255).all() and (first[:, 1].sum(axis=(1, 2)) == 255).all()
        stacker = FrameStacker(3, env.spec.frame_stack, env.spec.frame_shape, env.spec.frame_dtype)
        stacker.reset(first)
        step = env.step(np.array([1, 2, 0]))
        stacker.push(step.frames, step.game_over)
        obs = stacker.observation()
        assert obs.shape == (3, 8, 10, 10) and obs.dtype == np.uint8  # (N, s·C, H, W), oldest frame first
        np.testing.assert_array_equal(obs[:, :4], first)
        np.testing.assert_array_equal(obs[:, 4:], step.frames)
    finally:
        env.close()


def test_frame_encoder_maps_any_dtype_to_uint8_channels_first():
    uint8 = frame_encoder(spaces.Box(0, 255, (2, 3, 1), np.uint8))
    raw = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    np.testing.assert_array_equal(uint8(raw), raw.transpose(2, 0, 1))
    floats = frame_encoder(spaces.Box(-1.0, 1.0, (1, 2, 2), np.float32))
    out = floats(np.array([[[-1.0, 0.0], [1.0, 2.0]]], np.float32))  # (H=1, W=2, C=2)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 2)
    np.testing.assert_array_equal(out, [[[0, 255]], [[128, 255]]])  # −1 → 0, 0 → 128, 1 → 255, 2 clipped
    vector = frame_encoder(spaces.Box(-1.0, 1.0, (3,), np.float64))
    assert vector(np.zeros(3)).dtype == np.float32


def test_image_spaces_accepted_and_refused():
    check_gym_spaces("x", spaces.Discrete(3), spaces.Box(0, 1, (10, 10, 4), bool))
    check_gym_spaces("x", spaces.Discrete(3), spaces.Box(0, 255, (84, 84, 3), np.uint8))
    with pytest.raises(ValueError, match="finite bounds"):
        check_gym_spaces("x", spaces.Discrete(3), spaces.Box(-np.inf, np.inf, (8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="3-D Box"):
        check_gym_spaces("x", spaces.Discrete(3), spaces.Box(0, 1, (8, 8)))


def test_network_sized_from_the_image_without_downsampling():
    config = build_config("cartpole", overrides=[f"env.id=gym:{CATCH_ID}", "env.frame_stack=3", *TINY_MODEL])
    spec = task_spec(config)
    net_spec = network_spec(config, spec)
    assert net_spec.observation_shape == (12, 10, 10) and net_spec.is_image and not net_spec.downsample
    model = build_model(config, spec, torch.device("cpu")).eval()
    assert isinstance(model.body, ConvBody) and model.latent_shape == (8, 10, 10)
    out = model.initial_inference(torch.zeros(2, 12, 10, 10, dtype=torch.uint8))
    assert out.latent.shape == (2, 8, 10, 10) and out.policy_logits.shape == (2, 3)
    step = model.recurrent_inference(out.latent, out.lstm_state, torch.tensor([0, 2]))
    assert step.latent.shape == (2, 8, 10, 10)
    env = make_vector_env(config.env.id, 1, seed=0, mode="eval", **env_options(config))
    assert env.spec == spec  # every role's envs stack as the network expects
    env.close()
    stem = build_config("cartpole", overrides=[f"env.id=gym:{CATCH_ID}", "model.downsample=efficientzero",
                                               *TINY_MODEL])
    assert build_model(stem, task_spec(stem), torch.device("cpu")).latent_shape == (8, 1, 1)
    atari = build_config("atari100k")
    assert network_spec(atari, task_spec(atari)).downsample  # "auto" keeps EfficientZero's stem on 96×96
    assert not network_spec(atari, task_spec(atari)).one_hot_actions  # EfficientZero's a / A plane by default


def test_one_hot_action_planes_from_the_config():
    config = build_config("cartpole", overrides=[f"env.id=gym:{CATCH_ID}", "model.action_encoding=one_hot",
                                                 *TINY_MODEL])
    spec = task_spec(config)
    assert network_spec(config, spec).one_hot_actions
    model = build_model(config, spec, torch.device("cpu")).eval()
    assert model.body.dynamics_conv.in_channels == 8 + 3  # latent channels + one plane per action
    out = model.initial_inference(torch.zeros(2, 16, 10, 10, dtype=torch.uint8))
    assert model.recurrent_inference(out.latent, out.lstm_state, torch.tensor([0, 2])).latent.shape == (2, 8, 10, 10)
    with pytest.raises(ConfigError, match="model.action_encoding.*'plane', 'one_hot'"):
        build_config("cartpole", overrides=["model.action_encoding=onehot"])


def test_small_images_are_not_shifted_by_default():
    cpu = torch.device("cpu")
    assert build_augmentation("auto", (16, 10, 10), 0, cpu).kinds == ("intensity",)
    explicit = build_augmentation("shift", (16, 10, 10), 0, cpu)
    assert explicit.kinds == ("shift",) and explicit.pad == 1
    atari = build_augmentation("auto", (12, 96, 96), 0, cpu)
    assert atari.kinds == ("shift", "intensity") and atari.pad == 4
    assert build_augmentation("auto", (4,), 0, cpu) is None


def _tiny_image_run(env_id: str, tmp_path: Path, *extra: str):
    config = build_config("cartpole", overrides=[
        f"env.id={env_id}", "env.max_frames_eval=100", *TINY_MODEL, "run.max_env_steps=300",
        "train.training_steps=30", "run.max_train_steps=30", "replay.block_length=16", "replay.start_env_steps=64",
        "train.batch_size=8", "eval.episodes=2", "eval.interval=15", "mcts.num_simulations=4",
        "eval.num_simulations=4", "train.reanalyze_ratio=0.5", "run.stop_eval_return=0", *extra,
    ])
    summary = run_inline(config, tmp_path, log=False)
    assert summary.train_steps == 30 and summary.env_steps >= 64 and summary.last_eval_return is not None
    assert (tmp_path / "checkpoint.pt").exists()
    return summary


@pytest.mark.timeout(60)
def test_bool_image_task_trains_inline_through_the_conv_net(tmp_path):
    _tiny_image_run(f"gym:{CATCH_ID}", tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not HAVE_MINATAR, reason="minatar is not installed (optional extra: pip install '.[minatar]')")
def test_minatar_breakout_trains_inline(tmp_path):
    spec = env_spec("gym:MinAtar/Breakout-v1")
    assert spec.frame_shape == (4, 10, 10) and spec.action_meanings == ("NOOP", "LEFT", "RIGHT")
    env = make_vector_env("gym:MinAtar/Breakout-v1", 1, seed=0, mode="eval", sticky_action_prob=0.1)
    assert env._envs[0].unwrapped.game.sticky_action_prob == 0.1
    env.close()
    _tiny_image_run("gym:MinAtar/Breakout-v1", tmp_path, "env.sticky_action_prob=0.1")


@pytest.fixture
def unregistered_minatar(monkeypatch):
    """As in a fresh process: register_minatar has not run and the registry has no MinAtar/Breakout-v1."""
    monkeypatch.setattr(minatar_env, "_registered", False)
    monkeypatch.delitem(gymnasium.registry, "MinAtar/Breakout-v1", raising=False)
    return monkeypatch


def _load_run_py() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("speedy_run_cli", REPO / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_minatar_names_the_install_command(unregistered_minatar, tmp_path, capsys):
    unregistered_minatar.setitem(sys.modules, "minatar", None)  # `import minatar` raises ImportError
    with pytest.raises(ValueError, match=r"MinAtar/Breakout-v1 needs the MinAtar package.*pip install '\.\[minatar\]'"):
        resolve_env_id("gym:MinAtar/Breakout-v1")
    code = _load_run_py().main(["--set", "env.id=gym:MinAtar/Breakout-v1", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install '.[minatar]'" in err and "--no-deps minatar==1.0.15" in err
    assert not (tmp_path / "r").exists()


def test_minatar_ids_are_registered_lazily_with_sticky_actions(unregistered_minatar):
    """A stand-in `minatar.gym` (the real package is optional): its register_envs runs once, on the first MinAtar id,
    and the games get env.sticky_action_prob."""
    calls = []

    def register_envs() -> None:
        calls.append(1)
        if "MinAtar/SpeedyFake-v1" not in gymnasium.registry:
            gymnasium.register("MinAtar/SpeedyFake-v1", entry_point=Catch)

    fake = types.ModuleType("minatar.gym")
    fake.register_envs = register_envs
    parent = types.ModuleType("minatar")
    parent.gym = fake
    unregistered_minatar.setitem(sys.modules, "minatar", parent)
    unregistered_minatar.setitem(sys.modules, "minatar.gym", fake)
    resolve_env_id("CartPole-v1")
    assert not calls  # other ids never import minatar
    assert resolve_env_id("gym:MinAtar/SpeedyFake-v1").canonical == "gym:MinAtar/SpeedyFake-v1"
    env = make_vector_env("gym:MinAtar/SpeedyFake-v1", 2, seed=0, mode="eval", sticky_action_prob=0.1)
    try:
        assert env.spec.frame_shape == (4, 10, 10)
        assert all(e.unwrapped.sticky_action_prob == 0.1 for e in env._envs)
    finally:
        env.close()
    assert calls == [1]
