import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from speedy.components import build_model, reanalyze_settings, self_play_temperature, task_spec
from speedy.config import ConfigError, available_presets, build_config, load_preset
from speedy.learner import Learner
from speedy.losses import TrainingBatch
from speedy.optim import learning_rate
from speedy.roles.context import eval_slot
from speedy.targets import corrected_td_steps


def test_presets_load_and_validate():
    assert {"cartpole", "atari100k", "speedyzero"} <= set(available_presets())
    for name in available_presets():
        build_config(name)
    cfg = build_config("cartpole", overrides=["train.batch_size=64", "env.id=gym:CartPole-v1"])
    assert cfg.train.batch_size == 64 and cfg.env.id == "gym:CartPole-v1"


def test_a_preset_starts_from_its_base():
    spaceinvaders = build_config("minatar_spaceinvaders")
    by_hand = build_config("minatar", overrides=[
        "env.id=gym:MinAtar/SpaceInvaders-v1", "model.action_encoding=one_hot",
        "train.env_steps_per_train_step=4", "train.training_steps=24500",
    ])
    assert spaceinvaders == by_hand
    assert spaceinvaders.model.channels == 16 and spaceinvaders.train.td_steps == 10  # kept from the base


def test_preset_bases_merge_tables_and_chain(tmp_path):
    (tmp_path / "a.toml").write_text('[train]\nlr = 0.5\nbatch_size = 8\n[mcts]\nnum_simulations = 3\n')
    (tmp_path / "b.toml").write_text('base = "a"\n[train]\nbatch_size = 16\n')
    (tmp_path / "c.toml").write_text('base = "b"\n[mcts]\nnum_simulations = 7\n')
    assert load_preset("c", tmp_path) == {"train": {"lr": 0.5, "batch_size": 16}, "mcts": {"num_simulations": 7}}


def test_preset_base_errors_name_the_file(tmp_path):
    (tmp_path / "x.toml").write_text('base = "minatr"\n')
    (tmp_path / "minatar.toml").write_text("")
    with pytest.raises(ConfigError, match=r"x.toml: base = 'minatr': unknown preset 'minatr'.*Did you mean minatar"):
        load_preset("x", tmp_path)
    (tmp_path / "y.toml").write_text('base = "z"\n')
    (tmp_path / "z.toml").write_text('base = "y"\n')
    with pytest.raises(ConfigError, match=r"z.toml: base = 'y' closes a loop of presets: y → z → y"):
        load_preset("y", tmp_path)
    (tmp_path / "w.toml").write_text("base = 3\n")
    with pytest.raises(ConfigError, match=r"w.toml: base = 3 is not allowed: expected the name of a preset"):
        load_preset("w", tmp_path)


def test_searches_nobody_acts_on_keep_the_free_greedy_rule():
    """mcts.greedy_action reaches the searches whose greedy action is played (evaluation, greedy self-play envs);
    reanalysis and self-play without greedy envs keep "visits" (no one-step inference per search)."""
    from speedy.components import search_config

    cfg = build_config("cartpole", overrides=["mcts.greedy_action=one_step", "mcts.policy_target=completed_q"])
    spec = task_spec(cfg)
    assert search_config(cfg, spec).greedy_rule == "one_step"
    quiet = search_config(cfg, spec, acts_greedily=False)
    assert quiet.greedy_rule == "visits" and quiet.policy_target_rule == "completed_q"


def test_defaults_are_efficientzero():
    cfg = build_config()
    assert (cfg.train.batch_size, cfg.train.lr, cfg.mcts.num_simulations, cfg.replay.alpha) == (256, 0.2, 50, 0.6)
    assert (cfg.train.value_loss_weight, cfg.train.consistency_loss_weight) == (0.25, 2.0)
    assert cfg.reanalyze.search_weights == "target"  # EfficientZero re-searches policies with the target model


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
    with pytest.raises(ConfigError, match=r"mcts.greedy_action = 'q' is not allowed: expected 'visits' or"):
        build_config(overrides=["mcts.greedy_action='q'"])
    with pytest.raises(ConfigError, match=r"mcts.policy_target = 'gumbel' is not allowed: expected 'visits' or"):
        build_config(overrides=["mcts.policy_target='gumbel'"])
    with pytest.raises(ConfigError, match=r"model.obs_scale = \[1.0, 0.0\] is not allowed: expected finite"):
        build_config(overrides=["model.obs_scale=[1.0, 0.0]"])
    with pytest.raises(ConfigError, match=r"model.value_transform = 'log' is not allowed: expected one of 'h', 'none'"):
        build_config(overrides=["model.value_transform='log'"])
    with pytest.raises(ConfigError, match=r"roles.trainer_prefetch = 0 is not allowed: expected >= 1"):
        build_config(overrides=["roles.trainer_prefetch=0"])
    with pytest.raises(ConfigError, match=r"roles.sample_ring_messages = -1 is not allowed: expected >= 0"):
        build_config(overrides=["roles.sample_ring_messages=-1"])


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


def test_schedules_are_efficientzero_100k_plus_20k_last_steps():
    """EfficientZero: 100k training steps + 20k last steps; temperature 1 → 0.5 → 0.25 at 50k and 75k; warm-up 1% of
    100k = 1,000 steps; off-policy period 0.3 · 100k = 30k env steps; β anneals over all 120k."""
    config = build_config("atari100k")
    assert config.total_train_steps == 120_000
    temperatures = [self_play_temperature(config, step) for step in (0, 49_999, 50_000, 74_999, 75_000, 119_999)]
    assert temperatures == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert int(config.train.lr_warmup_fraction * config.train.training_steps) == 1_000
    assert math.isclose(learning_rate(499, 0.2, 1_000, 100_000, 0.1), 0.1)  # step s uses (s + 1) / 1000
    assert math.isclose(learning_rate(100_999, 0.2, 1_000, 100_000, 0.1), 0.2)
    assert math.isclose(learning_rate(101_000, 0.2, 1_000, 100_000, 0.1), 0.02)
    settings = reanalyze_settings(config, task_spec(config))
    assert settings.training_steps == 100_000
    age = np.array([0, 29_999, 30_000, 60_000, 120_000, 10**6])
    np.testing.assert_array_equal(corrected_td_steps(age, 5, settings.offpolicy_correction_ratio, 100_000),
                                  [5, 5, 4, 3, 1, 1])


def test_learner_warms_up_over_one_percent_of_training_steps():
    config = build_config("atari100k", overrides=["model.channels=4", "model.lstm_hidden=8", "model.proj_hidden=8",
                                                  "model.proj_out=8", "model.pred_hidden=8", "env.frame_size=32"])
    spec = task_spec(config)
    learner = Learner(build_model(config, spec, torch.device("cpu")), config, spec.frame_stack, torch.device("cpu"))
    assert learner.warmup_steps == 1_000
    assert learner.augment is not None and learner.augment.kinds == ("shift", "intensity")  # on for images


def test_vector_tasks_train_without_augmentation():
    config = build_config("cartpole")
    spec = task_spec(config)
    learner = Learner(build_model(config, spec, torch.device("cpu")), config, spec.frame_stack, torch.device("cpu"))
    assert config.train.augmentation == "auto" and learner.augment is None


def _cpu_learner(config) -> Learner:  # noqa: ANN001 - a Config
    spec = task_spec(config)
    return Learner(build_model(config, spec, torch.device("cpu")), config, spec.frame_stack, torch.device("cpu"))


def _fill(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def _all(model: torch.nn.Module, value: float) -> bool:
    return all(torch.all(p == value) for p in model.parameters())


def test_acting_weights_are_a_polyak_average_of_the_trained_ones():
    """decay 0.75: acting ← 0.75·acting + 0.25·weights per step, by hand on every parameter; 0 acts with the model."""
    learner = _cpu_learner(build_config("cartpole", overrides=["train.acting_ema_decay=0.75"]))
    assert learner.acting_model is not learner.model
    _fill(learner.acting_model, 4.0)
    _fill(learner.model, 8.0)
    learner.update_acting()
    assert _all(learner.acting_model, 5.0)  # 0.75·4 + 0.25·8
    learner.update_acting()
    assert _all(learner.acting_model, 5.75)  # 0.75·5 + 0.25·8
    assert _all(learner.model, 8.0)  # the trained weights are untouched
    learner.reset_acting()
    assert _all(learner.acting_model, 8.0)
    plain = build_config("cartpole")
    learner = _cpu_learner(plain)
    assert plain.train.acting_ema_decay == 0 and learner.acting_model is learner.model
    with pytest.raises(ConfigError, match="train.acting_ema_decay"):
        build_config("cartpole", overrides=["train.acting_ema_decay=1.0"])


def test_the_evaluators_average_is_its_own_and_leaves_the_acting_weights_alone():
    """eval.ema_decay 0.5 with no acting average: eval ← 0.5·eval + 0.5·weights per step, while self-play acts
    with the trained weights themselves; with both averages each follows its own decay."""
    learner = _cpu_learner(build_config("cartpole", overrides=["eval.ema_decay=0.5"]))
    assert learner.acting_model is learner.model and learner.eval_model is not learner.model
    _fill(learner.eval_model, 2.0)
    _fill(learner.model, 10.0)
    learner.update_acting()
    assert _all(learner.eval_model, 6.0)  # 0.5·2 + 0.5·10
    learner.update_acting()
    assert _all(learner.eval_model, 8.0)  # 0.5·6 + 0.5·10
    learner.reset_acting()
    assert _all(learner.eval_model, 10.0)
    both = build_config("cartpole", overrides=["eval.ema_decay=0.5", "train.acting_ema_decay=0.75"])
    learner = _cpu_learner(both)
    _fill(learner.acting_model, 4.0)
    _fill(learner.eval_model, 4.0)
    _fill(learner.model, 8.0)
    learner.update_acting()
    assert _all(learner.acting_model, 5.0)  # 0.75·4 + 0.25·8
    assert _all(learner.eval_model, 6.0)  # 0.5·4 + 0.5·8
    plain = build_config("cartpole", overrides=["train.acting_ema_decay=0.75", "eval.ema_decay=0"])
    learner = _cpu_learner(plain)
    assert learner.eval_model is learner.acting_model  # off: the evaluator plays what self-play acts with
    neither = build_config("cartpole", overrides=["eval.ema_decay=0"])
    assert (eval_slot(plain), eval_slot(both), eval_slot(neither)) == ("acting", "eval", "weights")
    with pytest.raises(ConfigError, match="eval.ema_decay"):
        build_config("cartpole", overrides=["eval.ema_decay=-0.1"])


def test_learner_mirrors_the_batches_it_trains_on():
    """train.mirror_*: a step on a batch whose samples are all drawn for mirroring is the step, without mirroring, on
    that batch mirrored by hand (observations negated, actions and policy columns swapped): same loss, same weights."""
    overrides = ["model.lstm_hidden=8", "model.mlp_latent=8", "model.mlp_hidden=[8]", "model.head_hidden=[8]",
                 "model.proj_hidden=8", "model.proj_out=8", "model.pred_hidden=8", "model.support_size=5"]
    mirrored = build_config("cartpole", overrides=[*overrides, "train.mirror_signs=[-1,-1,-1,-1]",
                                                   "train.mirror_actions=[1,0]"])
    plain = build_config("cartpole", overrides=overrides)
    spec = task_spec(plain)
    model = build_model(plain, spec, torch.device("cpu"))
    learner = Learner(copy.deepcopy(model), mirrored, spec.frame_stack, torch.device("cpu"))
    reference = Learner(copy.deepcopy(model), plain, spec.frame_stack, torch.device("cpu"))
    assert reference.mirror is None and learner.mirror is not None
    learner.mirror.draw = lambda batch: torch.ones(batch, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    B, K = 8, plain.train.unroll_steps
    batch = TrainingBatch(
        frames=torch.randn(B, spec.frame_stack + K, 4, generator=g),
        actions=torch.randint(0, 2, (B, K), generator=g),
        target_value_prefix=torch.arange(1, K + 1, dtype=torch.float32).repeat(B, 1),
        target_value=torch.rand(B, K + 1, generator=g) * 20,
        target_policy=torch.softmax(torch.randn(B, K + 1, 2, generator=g), -1),
        mask=torch.ones(B, K + 1), weights=torch.ones(B))
    by_hand = dataclasses.replace(batch, frames=-batch.frames, actions=1 - batch.actions,
                                  target_policy=batch.target_policy.flip(-1))
    stats, expected = learner.train_step(batch), reference.train_step(by_hand)
    assert stats.total_loss == pytest.approx(expected.total_loss, rel=1e-6)
    for mine, theirs in zip(learner.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)
    with pytest.raises(ConfigError, match="train.mirror_actions"):
        build_config("cartpole", overrides=["train.mirror_signs=[-1,-1,-1,-1]"])
    with pytest.raises(ValueError, match="train.mirror_signs"):
        Learner(copy.deepcopy(model), build_config("cartpole", overrides=[
            *overrides, "train.mirror_signs=[-1,-1]", "train.mirror_actions=[1,0]"]), spec.frame_stack,
            torch.device("cpu"))
