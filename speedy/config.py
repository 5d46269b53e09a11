"""One typed description of a run.

Resolution order (later wins): dataclass defaults (EfficientZero's Atari settings) → a named preset
(`speedy/presets/<name>.toml`, which may name a `base` preset it starts from) → the run file (`cluster.toml`, its
top-level sections) → `--set section.key=value` overrides. Every layer is validated: unknown keys (with the
nearest valid key suggested), wrong types and impossible values raise `ConfigError` naming where the value came
from, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"
AUGMENTATION_SETTINGS = ("auto", "none", "shift", "intensity", "shift+intensity")
DOWNSAMPLE_SETTINGS = ("auto", "efficientzero", "none")
ACTION_ENCODINGS = ("plane", "one_hot")
VALUE_TRANSFORMS = ("h", "none")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names source, key, value and what is allowed."""


@dataclass
class EnvConfig:
    id: str = "atari:Breakout"  # "atari:<Game>" or "gym:<gymnasium id>"
    frame_size: int = 96  # Atari frames are frame_size × frame_size RGB
    sticky_action_prob: float = 0.0  # 0.25 for the v5 protocol; MinAtar's games take it too (0.1 as published)
    max_frames_train: int = 12_000  # raw frames per training episode (gym tasks: agent steps)
    max_frames_eval: int = 108_000  # raw frames per evaluation episode (gym tasks: agent steps)
    # Frames per network input; 0 = the task's default: 4 for Atari and gym image observations, 1 for vectors.
    frame_stack: int = 0

    def validate(self) -> None:
        _check(self.id.startswith(("atari:", "gym:")), "env.id", self.id, "'atari:<Game>' or 'gym:<env id>'")
        _check(self.frame_size >= 16, "env.frame_size", self.frame_size, ">= 16")
        _check(0.0 <= self.sticky_action_prob < 1.0, "env.sticky_action_prob", self.sticky_action_prob, "in [0, 1)")
        _check(self.max_frames_train > 0, "env.max_frames_train", self.max_frames_train, "> 0")
        _check(self.max_frames_eval > 0, "env.max_frames_eval", self.max_frames_eval, "> 0")
        _check(self.frame_stack >= 0, "env.frame_stack", self.frame_stack, ">= 0 (0 = the task's default)")


@dataclass
class ModelConfig:
    support_size: int = 300
    # What the categorical value and value-prefix supports are over (speedy/model/support.py): "h" = EfficientZero's
    # squashed returns; "none" = the returns themselves, one bin per unit (support_size must then cover the largest
    # return), which weighs a value error alike at every return instead of ≈ 1/(2√v) as much at v.
    value_transform: str = "h"
    channels: int = 64
    reduced_channels: int = 16
    lstm_hidden: int = 512
    # Norm of every 1-D layer (MLP body, heads, projection, after the value-prefix LSTM): "batch" = EfficientZero's
    # BatchNorm; "layer" = LayerNorm, per sample, so search sees what training fitted (speedy/model/network.py,
    # norm_1d). Conv residual blocks use BatchNorm2d either way.
    norm: str = "batch"
    head_hidden: list[int] = field(default_factory=lambda: [32])
    proj_hidden: int = 1024
    proj_out: int = 1024
    pred_hidden: int = 512
    mlp_latent: int = 128
    mlp_hidden: list[int] = field(default_factory=lambda: [128])
    # Image tasks: "efficientzero" = EfficientZero's stem, 16× smaller (96 → 6); "none" = a stride-1 3×3 conv, the
    # image's grid kept (EfficientZero's code without `downsample`); "auto" = the stem for frames of >= 32 px, none
    # below (MinAtar's 10×10 would shrink to 1×1).
    downsample: str = "auto"
    # Vector tasks: normalise the representation MLP's first hidden layer (EfficientZero's MLP: true). With
    # norm = "layer" that layer's LayerNorm sees W·obs + b: it is nearly blind to the observation's magnitude
    # (LayerNorm(c·h) = LayerNorm(h)), and for CartPole how far the cart is from the centre *is* the magnitude;
    # false (the cartpole preset) feeds ReLU(W·obs + b) on unnormalised.
    input_norm: bool = True
    # Vector tasks: multipliers of the observation's components before the representation MLP, one per component of
    # one frame (empty = none). A component whose useful range is small (CartPole's pole angle: ±0.21 rad before the
    # episode ends, against ±2.4 for the cart's position) otherwise reaches the first layer ten times weaker than
    # the others, and the values resolve it coarsely.
    obs_scale: list[float] = field(default_factory=list)
    # Image tasks: how the dynamics network sees the action. "plane" = EfficientZero's one constant plane a / A;
    # "one_hot" = A planes, 1 on the action's. With a scalar plane the conv must decode a non-monotonic map
    # (NOOP 0, LEFT 1/4, RIGHT 2/4, FIRE 3/4 in SpaceInvaders) before it can move anything: a small network did not.
    action_encoding: str = "plane"

    def validate(self) -> None:
        _check(self.support_size >= 1, "model.support_size", self.support_size, ">= 1")
        _check(self.value_transform in VALUE_TRANSFORMS, "model.value_transform", self.value_transform,
               f"one of {', '.join(repr(t) for t in VALUE_TRANSFORMS)}")
        for key in ("channels", "reduced_channels", "lstm_hidden", "proj_hidden", "proj_out", "pred_hidden",
                    "mlp_latent"):
            _check(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), ">= 1")
        _check(self.channels % 2 == 0, "model.channels", self.channels, "an even number")
        _check(self.norm in ("batch", "layer"), "model.norm", self.norm, "'batch' or 'layer'")
        _check(all(math.isfinite(x) and x > 0 for x in self.obs_scale), "model.obs_scale", self.obs_scale,
               "finite multipliers > 0 (one per observation component), or empty")
        _check(self.downsample in DOWNSAMPLE_SETTINGS, "model.downsample", self.downsample,
               f"one of {', '.join(repr(d) for d in DOWNSAMPLE_SETTINGS)}")
        _check(self.action_encoding in ACTION_ENCODINGS, "model.action_encoding", self.action_encoding,
               f"one of {', '.join(repr(e) for e in ACTION_ENCODINGS)}")


@dataclass
class MctsConfig:
    num_simulations: int = 50
    pb_c_base: float = 19652.0
    pb_c_init: float = 1.25
    dirichlet_alpha: float = 0.3
    exploration_fraction: float = 0.25
    value_delta_max: float = 0.01
    lstm_horizon: int = 5
    # The greedy action of evaluation and of greedy self-play envs (speedy/mcts/policy.py): "visits" (the most
    # visited root child, EfficientZero), "completed_q" (Gumbel MuZero's argmax of prior logits + σ(Q)) or
    # "one_step" (argmax of the networks' one-step lookahead r̂ + γ·v̂ from the root).
    greedy_action: str = "visits"
    # The policy target stored by self-play and reanalysis: "visits" (the visit distribution, EfficientZero) or
    # "completed_q" (Gumbel MuZero's softmax(prior logits + σ(Q))).
    policy_target: str = "visits"

    def validate(self) -> None:
        _check(self.num_simulations >= 1, "mcts.num_simulations", self.num_simulations, ">= 1")
        _check(self.dirichlet_alpha > 0, "mcts.dirichlet_alpha", self.dirichlet_alpha, "> 0")
        _check(0 <= self.exploration_fraction <= 1, "mcts.exploration_fraction", self.exploration_fraction,
               "in [0, 1]")
        _check(self.lstm_horizon >= 1, "mcts.lstm_horizon", self.lstm_horizon, ">= 1")
        # here: the config module imports nothing of speedy at load
        from speedy.mcts.policy import GREEDY_RULES, POLICY_TARGET_RULES

        for key, allowed in (("greedy_action", GREEDY_RULES), ("policy_target", POLICY_TARGET_RULES)):
            _check(getattr(self, key) in allowed, f"mcts.{key}", getattr(self, key),
                   " or ".join(repr(r) for r in allowed))


@dataclass
class ReplayConfig:
    capacity: int = 100_000  # positions (agent steps) kept
    block_length: int = 200  # positions per stored trajectory block
    alpha: float = 0.6
    beta_start: float = 0.4
    beta_end: float = 1.0
    priority_eps: float = 1e-6
    start_env_steps: int = 2_000  # no training before replay holds this many positions
    # Priority Refresh (SpeedyZero): a sweep sets every held position's priority to |ẑ − v| with recent weights.
    # Training steps from the start of one sweep to the next. Inline: a sweep every that many steps (0 = none).
    # Multi-process (`roles.refreshers` ≥ 1): replay paces the refreshers' sweeps to at most one per that many
    # steps (0 = back to back, as fast as they go).
    refresh_interval: int = 0

    def validate(self) -> None:
        _check(self.capacity >= self.block_length, "replay.capacity", self.capacity, ">= replay.block_length")
        _check(self.block_length >= 1, "replay.block_length", self.block_length, ">= 1")
        _check(0 <= self.alpha <= 1, "replay.alpha", self.alpha, "in [0, 1]")
        _check(0 <= self.beta_start <= 1, "replay.beta_start", self.beta_start, "in [0, 1]")
        _check(0 <= self.beta_end <= 1, "replay.beta_end", self.beta_end, "in [0, 1]")
        _check(self.priority_eps > 0, "replay.priority_eps", self.priority_eps, "> 0")
        _check(self.start_env_steps >= 0, "replay.start_env_steps", self.start_env_steps, ">= 0")
        _check(self.refresh_interval >= 0, "replay.refresh_interval", self.refresh_interval, ">= 0 (0 = none)")


@dataclass
class TrainConfig:
    batch_size: int = 256
    # EfficientZero measures its schedules against 100k training steps and then trains 20k "last steps" more:
    # visit temperature milestones, learning-rate warm-up and the off-policy period are fractions of training_steps;
    # the importance-sampling β anneals over all training_steps + last_steps.
    training_steps: int = 100_000
    last_steps: int = 20_000
    unroll_steps: int = 5
    td_steps: int = 5
    discount: float = 0.997  # per raw frame for Atari (per agent step for gym envs)
    optimizer: str = "sgd"  # "sgd" | "adam" | "lars"
    lr: float = 0.2
    lr_warmup_fraction: float = 0.01
    lr_decay_steps: int = 100_000
    lr_decay_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    lars_eta: float = 0.001  # clipped LARS trust coefficient η
    lars_clip: float = 1.0  # clipped LARS cap c on the layer-wise rate multiplier
    lars_beta: float = 0.0  # β in η‖w‖ / (‖g‖ + β‖w‖)
    value_loss_weight: float = 0.25
    value_prefix_loss_weight: float = 1.0
    policy_loss_weight: float = 1.0
    consistency_loss_weight: float = 2.0
    target_update_interval: int = 200
    # Polyak average of the weights that self-play, evaluation and Priority Refresh act with: after every optimizer
    # step acting ← decay·acting + (1 − decay)·weights (0 = act with the latest weights, as EfficientZero). Training,
    # the target model and the reanalysis search keep the latest weights.
    acting_ema_decay: float = 0.0
    reanalyze_ratio: float = 0.99  # fraction of positions whose policy target is re-searched
    offpolicy_correction_ratio: float = 0.3  # n shrinks by one per ratio·train.training_steps env steps of age
    env_steps_per_train_step: float = 1.0  # data/update ratio bound; 0 = unbounded
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    # EfficientZero's augmentation of the training and consistency-target stacks (speedy/augment.py): "auto" = shift
    # and intensity for image tasks (intensity only for frames under 32 px, e.g. MinAtar's 10×10), none for vector
    # tasks; or "none", "shift", "intensity", "shift+intensity".
    augmentation: str = "auto"
    # A vector task's mirror symmetry as augmentation (speedy/augment.py, Mirror): each sample is mirrored with
    # probability 1/2, its observation components multiplied by mirror_signs (±1 each) and every action a replaced by
    # mirror_actions[a], the policy targets permuted alike. Both empty = off (EfficientZero has no such
    # augmentation). CartPole: mirror_signs = [-1, -1, -1, -1], mirror_actions = [1, 0].
    mirror_signs: list[float] = field(default_factory=list)
    mirror_actions: list[int] = field(default_factory=list)
    # EfficientZero masks the value and value-prefix losses past the episode end (k > valid steps); false trains
    # them there too (value → 0, value prefix → unchanged: no reward after the end).
    mask_past_end: bool = True
    mixed_precision: bool = False
    # Testing aid, inline mode only: train each batch this many training steps after replay drew it and its targets
    # were computed (the lead a multi-process pipeline has, trainer.jsonl's sample_lead_steps), so the lead's effect
    # on learning can be measured on the deterministic inline loop. 0: the batch is drawn at the step it trains.
    inline_sample_lead: int = 0

    def validate(self) -> None:
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.training_steps >= 1, "train.training_steps", self.training_steps, ">= 1")
        _check(self.last_steps >= 0, "train.last_steps", self.last_steps, ">= 0")
        _check(self.unroll_steps >= 1, "train.unroll_steps", self.unroll_steps, ">= 1")
        _check(self.td_steps >= 1, "train.td_steps", self.td_steps, ">= 1")
        _check(0 < self.discount <= 1, "train.discount", self.discount, "in (0, 1]")
        _check(self.optimizer in ("sgd", "adam", "lars"), "train.optimizer", self.optimizer,
               "one of 'sgd', 'adam', 'lars'")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(0 <= self.lr_warmup_fraction < 1, "train.lr_warmup_fraction", self.lr_warmup_fraction, "in [0, 1)")
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "> 0")
        _check(self.inline_sample_lead >= 0, "train.inline_sample_lead", self.inline_sample_lead, ">= 0")
        _check(0 <= self.reanalyze_ratio <= 1, "train.reanalyze_ratio", self.reanalyze_ratio, "in [0, 1]")
        _check(self.offpolicy_correction_ratio > 0, "train.offpolicy_correction_ratio",
               self.offpolicy_correction_ratio, "> 0")
        _check(self.target_update_interval >= 1, "train.target_update_interval", self.target_update_interval,
               ">= 1")
        _check(0 <= self.acting_ema_decay < 1, "train.acting_ema_decay", self.acting_ema_decay, "in [0, 1)")
        _check(self.env_steps_per_train_step >= 0, "train.env_steps_per_train_step",
               self.env_steps_per_train_step, ">= 0")
        _check(self.augmentation in AUGMENTATION_SETTINGS, "train.augmentation", self.augmentation,
               f"one of {', '.join(repr(a) for a in AUGMENTATION_SETTINGS)}")
        _check(all(sign in (-1, 1) for sign in self.mirror_signs), "train.mirror_signs", self.mirror_signs,
               "a list of -1 and 1 (one per observation component)")
        _check(bool(self.mirror_signs) == bool(self.mirror_actions), "train.mirror_actions", self.mirror_actions,
               "given together with train.mirror_signs (both empty = no mirroring)")
        n = len(self.mirror_actions)
        _check(sorted(self.mirror_actions) == list(range(n))
               and all(self.mirror_actions[a] == b and self.mirror_actions[b] == a
                       for a, b in enumerate(self.mirror_actions)),
               "train.mirror_actions", self.mirror_actions,
               "a permutation of 0 … A−1 that is its own inverse (mirroring twice gives back each action)")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "train.device",
               self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class ActorConfig:
    num_envs: int = 8  # environments stepped together by one actor (one search batch)
    temperature_schedule: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])
    temperature_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # × train.training_steps
    weight_update_interval: int = 10  # training steps between weight pulls (also the refreshers')
    # Envs of each actor (its last ones) that play as the evaluator does: no root noise, the greedy action
    # (mcts.greedy_action) (Ape-X-style per-env exploration). Replay then also holds the states the greedy policy
    # runs into, which the exploring envs, kept near the middle by their noise, rarely reach. 0 = every env explores
    # (EfficientZero).
    greedy_envs: int = 0
    # From this fraction of train.training_steps on the greedy envs play greedily; before it they explore as the others
    # do (exploration first, the greedy policy's own states once there is a policy worth following). 0 = from the start.
    greedy_envs_from: float = 0.0

    def validate(self) -> None:
        _check(self.num_envs >= 1, "actor.num_envs", self.num_envs, ">= 1")
        _check(0 <= self.greedy_envs <= self.num_envs, "actor.greedy_envs", self.greedy_envs,
               f"in [0, actor.num_envs = {self.num_envs}]")
        _check(0 <= self.greedy_envs_from <= 1, "actor.greedy_envs_from", self.greedy_envs_from, "in [0, 1]")
        _check(len(self.temperature_schedule) == len(self.temperature_milestones) + 1,
               "actor.temperature_schedule", self.temperature_schedule,
               "one more entry than actor.temperature_milestones")
        _check(all(t > 0 for t in self.temperature_schedule), "actor.temperature_schedule",
               self.temperature_schedule, "temperatures > 0")
        _check(self.weight_update_interval >= 1, "actor.weight_update_interval", self.weight_update_interval,
               ">= 1")


@dataclass
class ReanalyzeConfig:
    # Weights of the policy re-search: "target" = the target model (EfficientZero: refreshed every
    # train.target_update_interval steps, the model the value targets bootstrap from too); "latest" = recent
    # weights, pulled every weight_update_interval training steps.
    search_weights: str = "target"
    weight_update_interval: int = 25  # training steps between weight pulls (search_weights = "latest")

    def validate(self) -> None:
        _check(self.search_weights in ("target", "latest"), "reanalyze.search_weights", self.search_weights,
               "'target' or 'latest'")
        _check(self.weight_update_interval >= 1, "reanalyze.weight_update_interval", self.weight_update_interval,
               ">= 1")


@dataclass
class EvalConfig:
    episodes: int = 32
    interval: int = 5_000  # training steps between evaluations
    num_simulations: int = 50
    # Keep the weights of every evaluation as RUN_DIR/evals/step-NNNNNNN/checkpoint.pt (speedy/checkpoint.py,
    # save_eval_weights), to replay a dip later with tools/value_trace.py or tools/greedy_rules.py. Off: a CartPole
    # run's 20 evaluations keep 40 MB, an Atari run's far more.
    keep_weights: bool = False
    # The evaluator plays a Polyak average of the trained weights, avg ← decay·avg + (1 − decay)·weights after every
    # training step, that no other role acts with (train.acting_ema_decay averages for self-play and refresh too,
    # which changes the data). 0 (the default): the evaluator plays the weights self-play acts with. The cartpole
    # preset sets 0.998 (docs/benchmarks.md, twelfth session).
    ema_decay: float = 0.0

    def validate(self) -> None:
        _check(self.episodes >= 1, "eval.episodes", self.episodes, ">= 1")
        _check(0 <= self.ema_decay < 1, "eval.ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.interval >= 1, "eval.interval", self.interval, ">= 1")
        _check(self.num_simulations >= 1, "eval.num_simulations", self.num_simulations, ">= 1")


@dataclass
class RolesConfig:
    """Processes of a single-box run (0 = size to the machine). See speedy/roles/launch.py."""

    actors: int = 0
    reanalyzers: int = 0
    refreshers: int = 0  # priority refreshers; 0 = auto (one when cores allow), -1 = none
    # Data-parallel (DDP) trainers, one process each (gloo on CPU, NCCL on CUDA, a process group of this node only):
    # the effective batch is trainers × train.batch_size; trainer 0 publishes the weights and writes checkpoints.
    trainers: int = 1
    search_groups: int = 2  # env groups per actor searched in turn, so inference and tree work overlap
    batches_in_flight: int = 2  # batches each reanalyzer works on at once
    # On a GPU: the share of its memory the inference processes (actors, reanalyzers, refreshers, evaluator) split
    # between them, each capping its PyTorch allocator at its part; the trainer keeps the rest.
    inference_gpu_share: float = 0.6
    refresh_chunk: int = 1024  # positions per refresh request
    max_restarts: int = 3  # restarts of one role before the run stops
    trainer_threads: int = 0  # torch threads of the trainer; 0 = auto (the cores the other roles leave; 2 on a GPU)
    slow_reanalyzer_s: float = 0.0  # testing/profiling aid: extra seconds per batch in reanalyzer 0
    # testing/profiling aid: "first" = slow_reanalyzer_s slows reanalyzer 0 only (an injected bottleneck); "all" =
    # every reanalyzer (a fixed cost per batch that makes reanalysis the bottleneck: tools/cluster_scaling.py)
    slow_reanalyzers: str = "first"
    slow_reanalyzer_every: int = 1  # testing/profiling aid: slow_reanalyzer_s every N-th batch (N > 1: a pause)
    slow_actor_env_s: float = 0.0  # testing/profiling aid: extra seconds per env step of actor 0's env groups
    slow_trainer_s: float = 0.0  # testing/profiling aid: extra seconds per training step
    # testing/profiling aid: batches each reanalyzer's ring to the trainer holds; 0 = auto (batches_in_flight + 1)
    batch_ring_messages: int = 0
    # Sample windows each reanalyzer's ring from replay holds; 0 = auto (batches_in_flight + 1). Each waits there
    # before it is worked on: with reanalysis the bottleneck a batch is trained about ring + batches_in_flight steps
    # after its draw; with the trainer the bottleneck every ring and the trainer's prefetch add their depth.
    sample_ring_messages: int = 0
    trainer_prefetch: int = 2  # batches the trainer holds decoded, ready for its next steps

    def validate(self) -> None:
        for key in ("actors", "reanalyzers"):
            _check(getattr(self, key) >= 0, f"roles.{key}", getattr(self, key), ">= 0 (0 = auto)")
        _check(self.trainers >= 1, "roles.trainers", self.trainers, ">= 1")
        _check(self.refreshers >= -1, "roles.refreshers", self.refreshers, ">= -1 (0 = auto, -1 = none)")
        _check(self.search_groups >= 1, "roles.search_groups", self.search_groups, ">= 1")
        _check(self.batches_in_flight >= 1, "roles.batches_in_flight", self.batches_in_flight, ">= 1")
        _check(self.refresh_chunk >= 1, "roles.refresh_chunk", self.refresh_chunk, ">= 1")
        _check(0 < self.inference_gpu_share < 1, "roles.inference_gpu_share", self.inference_gpu_share, "in (0, 1)")
        _check(self.max_restarts >= 0, "roles.max_restarts", self.max_restarts, ">= 0")
        _check(self.trainer_threads >= 0, "roles.trainer_threads", self.trainer_threads, ">= 0 (0 = auto)")
        for key in ("slow_reanalyzer_s", "slow_actor_env_s", "slow_trainer_s"):
            _check(getattr(self, key) >= 0, f"roles.{key}", getattr(self, key), ">= 0")
        _check(self.slow_reanalyzers in ("first", "all"), "roles.slow_reanalyzers", self.slow_reanalyzers,
               "'first' or 'all'")
        _check(self.slow_reanalyzer_every >= 1, "roles.slow_reanalyzer_every", self.slow_reanalyzer_every, ">= 1")
        _check(self.batch_ring_messages >= 0, "roles.batch_ring_messages", self.batch_ring_messages,
               ">= 0 (0 = auto: roles.batches_in_flight + 1)")
        _check(self.sample_ring_messages >= 0, "roles.sample_ring_messages", self.sample_ring_messages,
               ">= 0 (0 = auto: roles.batches_in_flight + 1)")
        _check(self.trainer_prefetch >= 1, "roles.trainer_prefetch", self.trainer_prefetch, ">= 1")


@dataclass
class RunConfig:
    seed: int = 0
    run_dir: str = "runs"  # a fresh sub-directory per run is created below this
    max_env_steps: int = 100_000  # agent steps collected (Atari 100k = 100k agent steps = 400k frames)
    max_train_steps: int = 0  # 0 = train.training_steps + train.last_steps
    log_interval_s: float = 5.0
    stop_eval_return: float = 0.0  # stop once a full evaluation reaches this mean return (0 = never)
    num_threads: int = 0  # torch/BLAS threads of an inline run; 0 = auto (1 for vector tasks, all cores for Atari)
    checkpoint_interval_steps: int = 1000  # the trainer writes checkpoint.pt every this many training steps (0 = off)
    checkpoint_interval_min: float = 10.0  # ... and at least every this many minutes of training (0 = off)
    # crash safety of the replay buffer: a snapshot (replay.npz + journaled frames) every this many minutes (0 = only
    # when the run stops); speedy/roles/resume.py
    replay_snapshot_interval_min: float = 10.0

    def validate(self) -> None:
        _check(self.max_env_steps >= 1, "run.max_env_steps", self.max_env_steps, ">= 1")
        _check(self.max_train_steps >= 0, "run.max_train_steps", self.max_train_steps, ">= 0")
        _check(self.log_interval_s > 0, "run.log_interval_s", self.log_interval_s, "> 0")
        _check(self.num_threads >= 0, "run.num_threads", self.num_threads, ">= 0 (0 = auto)")
        _check(self.checkpoint_interval_steps >= 0, "run.checkpoint_interval_steps", self.checkpoint_interval_steps,
               ">= 0 (0 = off)")
        _check(self.checkpoint_interval_min >= 0, "run.checkpoint_interval_min", self.checkpoint_interval_min,
               ">= 0 (0 = off)")
        _check(self.replay_snapshot_interval_min >= 0, "run.replay_snapshot_interval_min",
               self.replay_snapshot_interval_min, ">= 0 (0 = only at the end)")


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mcts: MctsConfig = field(default_factory=MctsConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    reanalyze: ReanalyzeConfig = field(default_factory=ReanalyzeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()

    @property
    def total_train_steps(self) -> int:
        """Training steps the run takes: run.max_train_steps, or train.training_steps + train.last_steps."""
        return self.run.max_train_steps or self.train.training_steps + self.train.last_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: expected {allowed}")


def available_presets(preset_dir: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in preset_dir.glob("*.toml"))


def read_run_file(path: str | Path) -> dict[str, Any]:
    """A run file (cluster.toml) as a dict; ConfigError if it is missing or not valid TOML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run file {path} does not exist")
    return _read_toml(path)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err


def auto_preset() -> str:
    """'auto' resolves to the Atari 100k preset on a machine with a CUDA GPU, else to CartPole (learns in minutes
    on a laptop CPU)."""
    import torch

    return "atari100k" if torch.cuda.is_available() else "cartpole"


def load_preset(name: str, preset_dir: Path = PRESET_DIR) -> dict[str, Any]:
    """The named preset's sections as a dict. A preset may start from another one: a top-level `base = "<name>"`
    loads that preset first (itself possibly based on a third), and this file's values replace the base's key by key
    (tables merge, everything else is replaced). ConfigError names the file for an unknown base or a loop."""
    return _load_preset(name, preset_dir, chain=(), referrer=None)


def _load_preset(name: str, preset_dir: Path, chain: tuple[str, ...], referrer: Path | None) -> dict[str, Any]:
    if name == "auto":
        name = auto_preset()
    path = preset_dir / f"{name}.toml"
    if not path.exists():
        names = available_presets(preset_dir)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        where = f"{referrer}: base = {name!r}: " if referrer is not None else ""
        raise ConfigError(f"{where}unknown preset {name!r}; available: auto, {', '.join(names)}.{hint}")
    if name in chain:
        raise ConfigError(f"{referrer}: base = {name!r} closes a loop of presets: {' → '.join((*chain, name))}")
    values = _read_toml(path)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base = {base!r} is not allowed: expected the name of a preset (a string)")
    return _merged(_load_preset(base, preset_dir, (*chain, name), path), values)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s values on top: nested tables merge key by key, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Return (ok, coerced value). ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        (item_type,) = typing.get_args(annotation)[:1]
        if not isinstance(value, list | tuple):
            return False, value
        coerced = []
        for item in value:
            ok, item_value = _type_ok(item, item_type)
            if not ok:
                return False, value
            coerced.append(item_value)
        return True, coerced
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(annotation):
            ok, coerced = _type_ok(value, option)
            if ok:
                return True, coerced
        return False, value
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is str:
        return isinstance(value, str), value
    return False, value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _apply(target: Any, values: dict[str, Any], source: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(target))
    names = [f.name for f in dataclasses.fields(target)]
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint} (valid: {', '.join(names)})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a table of settings, got {value!r}")
            _apply(current, value, source, f"{dotted}.")
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{source}: '{dotted}' = {value!r} has type {type(value).__name__}; "
                f"expected {_type_name(hints[key])}"
            )
        setattr(target, key, coerced)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a validated Config from `dataclasses.asdict` output (how a config crosses to a role process)."""
    config = Config()
    _apply(config, values, "config")
    config.validate()
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` → (['section', 'key'], value); the value is read as TOML (strings may be bare)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.batch_size=64")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare string such as env.id=gym:CartPole-v1
    return key.strip().split("."), value


def build_config(
    preset: str | None = None,
    run_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Defaults ← preset ← run file sections ← `--set` overrides; validated. See module docstring."""
    config = Config()
    run_values: dict[str, Any] = {}
    if run_file is not None:
        path = Path(run_file)
        if not path.exists():
            raise ConfigError(f"run file {path} does not exist")
        run_values = _read_toml(path)
        run_values.pop("cluster", None)  # node layout: read by the node agent, not part of the algorithm
        preset = preset or run_values.pop("preset", None)
        run_values.pop("preset", None)
        if preset is not None and not isinstance(preset, str):
            raise ConfigError(f"{path}: 'preset' = {preset!r} must be a string")
    if preset:
        _apply(config, load_preset(preset), f"preset '{preset}'")
    if run_values:
        _apply(config, run_values, str(run_file))
    _apply_overrides(config, overrides or [])
    config.validate()
    return config


def _apply_overrides(config: Config, overrides: list[str]) -> None:
    for text in overrides:
        keys, value = parse_override(text)
        nested: dict[str, Any] = value
        for key in reversed(keys):
            nested = {key: nested}
        _apply(config, nested, f"--set {text}")


def resumed_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a stopped run was started with (its run_dir/config.json) ← `--set` overrides; validated.
    Overrides of what the checkpoint's tensors depend on are refused when the checkpoint is loaded."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"--resume {run_dir}: no {path.name} there (not a speedy run directory)")
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume {run_dir}: {path} is unreadable: {e}") from e
    config = Config()
    _apply(config, values, str(path))
    _apply_overrides(config, overrides or [])
    config.validate()
    return config
