import pytest

from speedy.config import ConfigError, available_presets, build_config


def test_presets_load_and_validate():
    assert {"cartpole", "atari100k", "speedyzero"} <= set(available_presets())
    for name in available_presets():
        build_config(name)
    cfg = build_config("cartpole", overrides=["train.batch_size=64", "env.id=gym:CartPole-v1"])
    assert cfg.train.batch_size == 64 and cfg.env.id == "gym:CartPole-v1"


def test_defaults_are_efficientzero():
    cfg = build_config()
    assert (cfg.train.batch_size, cfg.train.lr, cfg.mcts.num_simulations, cfg.replay.alpha) == (256, 0.2, 50, 0.6)
    assert (cfg.train.value_loss_weight, cfg.train.consistency_loss_weight) == (0.25, 2.0)


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.batch_sise'.*did you mean 'train.batch_size'"):
        build_config("cartpole", overrides=["train.batch_sise=3"])


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError, match=r"'train.batch_size' = 'big' has type str; expected int"):
        build_config(overrides=["train.batch_size='big'"])


def test_impossible_value_names_what_is_allowed():
    with pytest.raises(ConfigError, match=r"replay.alpha = 1.5 is not allowed: expected in \[0, 1\]"):
        build_config(overrides=["replay.alpha=1.5"])
    with pytest.raises(ConfigError, match=r"model.norm = 'group' is not allowed: expected 'batch' or 'layer'"):
        build_config(overrides=["model.norm='group'"])


def test_run_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('preset = "cartpole"\n[train]\nbatchsize = 16\n')
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key 'train.batchsize'.*'train.batch_size'"):
        build_config(run_file=path)
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(run_file=path)


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="unknown preset 'cartpol'.*cartpole"):
        build_config("cartpol")
