"""Inline mode: actor, replay, reanalyzer, trainer and evaluator logic in one process, for debugging and tests.

The loop interleaves self-play and training under the data/update bound (`train.env_steps_per_train_step`):
self-play runs while env steps < start + ratio · train steps, training otherwise. Weights flow as in the
distributed system: self-play copies every `actor.weight_update_interval` steps, reanalysis every
`reanalyze.weight_update_interval`, the target model every `train.target_update_interval`.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from speedy.checkpoint import save_checkpoint, save_eval_weights
from speedy.components import (
    block_layout,
    build_model,
    env_options,
    frame_store_capacity,
    greedy_env_mask,
    greedy_envs_on,
    reanalyze_settings,
    resolve_device,
    root_noise_fraction,
    search_config,
    self_play_temperature,
    task_spec,
)
from speedy.config import Config
from speedy.envs import make_vector_env
from speedy.evaluate import EvalResult, evaluate
from speedy.learner import Learner
from speedy.losses import TrainingBatch
from speedy.mcts import dirichlet_noise, self_play_actions
from speedy.metrics import BatchStaleness, MetricsWriter
from speedy.reanalyze import BatchTargets, compute_targets, refresh_all_priorities, sample_windows
from speedy.replay import ReplayBuffer, SampledPositions
from speedy.replay.frames import FrameSource
from speedy.runinfo import Milestones, host_summary, milestone_interval
from speedy.search import ModelSearch
from speedy.selfplay import SelfPlay, random_policy
from speedy.shm.frames import FrameStore
from speedy.targets import beta_schedule
from speedy.threads import limit_threads


@dataclass
class PendingBatch:
    """A batch drawn ahead of the step that trains on it (train.inline_sample_lead)."""

    sample: SampledPositions
    targets: BatchTargets
    batch: TrainingBatch


@dataclass
class RunSummary:
    env_steps: int
    train_steps: int
    minutes: float
    best_eval_return: float | None
    last_eval_return: float | None
    reached_target_env_steps: int | None  # env steps when run.stop_eval_return was first reached
    reached_target_minutes: float | None
    run_dir: str
    restarts: dict[str, int] = field(default_factory=dict)  # role process → times it was restarted after a failure


def _sync(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def run_inline(config: Config, run_dir: Path, log: bool = True) -> RunSummary:
    rng = np.random.default_rng(config.run.seed)
    torch.manual_seed(config.run.seed)
    spec = task_spec(config)
    # Small networks run fastest on one thread; extra threads only spin against the env and the tree.
    limit_threads(config.run.num_threads or (1 if spec.kind == "gym" else max(1, os.cpu_count() or 1)))
    device = resolve_device(config.train.device)
    layout = block_layout(config, spec)
    model = build_model(config, spec, device)
    target_model, actor_model, reanalyze_model = (copy.deepcopy(model).eval() for _ in range(3))
    learner = Learner(model, config, spec.frame_stack, device)
    total_train = config.total_train_steps
    run_id = f"inline{uuid.uuid4().hex[:8]}"
    frames = FrameStore.create(run_id, "frames0", spec.frame_shape, spec.frame_dtype,
                               frame_store_capacity(config, layout, config.actor.num_envs))
    source = FrameSource([frames])
    replay = ReplayBuffer(layout, config.replay.capacity, config.replay.alpha, config.replay.priority_eps)
    env_kwargs = env_options(config)
    train_env = make_vector_env(config.env.id, config.actor.num_envs, seed=config.run.seed, mode="train",
                                **env_kwargs)
    eval_env = make_vector_env(config.env.id, min(config.eval.episodes, 8), seed=config.run.seed + 10_000,
                               mode="eval", **env_kwargs)
    selfplay = SelfPlay(train_env, frames, 0, layout, config.run.seed)
    actor_search = ModelSearch(actor_model, search_config(config, spec, acts_greedily=config.actor.greedy_envs > 0),
                               device)
    reanalyze_search = ModelSearch(reanalyze_model, search_config(config, spec, acts_greedily=False), device)
    # The evaluator plays the actors' weights, or its own average of the trained ones (eval.ema_decay).
    eval_model = copy.deepcopy(model).eval() if learner.eval_model is not learner.acting_model else actor_model
    eval_search = ModelSearch(eval_model, search_config(config, spec, config.eval.num_simulations), device)
    settings = reanalyze_settings(config, spec)
    metrics = {name: MetricsWriter(run_dir, name) for name in ("selfplay", "train", "eval")}
    metrics["agent"] = MetricsWriter(run_dir, "agent", tensorboard=False)
    metrics["agent"].write(0, {"event": "start", "host": host_summary(), "config": asdict(config)})

    start = time.time()
    milestones = Milestones(metrics["agent"], start, milestone_interval(config.run.max_env_steps))
    env_steps = train_steps = actor_version = target_version = 0
    staleness = BatchStaleness()
    pending: deque[PendingBatch] = deque()
    last_log = start
    evals: list[EvalResult] = []
    reached: tuple[int, float] | None = None
    recent_returns: list[float] = []
    ratio = config.train.env_steps_per_train_step
    start_steps = config.replay.start_env_steps

    evaluated_at = -1  # training step of the weights last evaluated

    def run_eval() -> EvalResult:
        nonlocal reached, evaluated_at
        evaluated_at = train_steps
        _sync(actor_model, learner.acting_model)  # self-play goes on with the weights evaluated (or averaged) now
        if eval_model is not actor_model:
            _sync(eval_model, learner.eval_model)
        if config.eval.keep_weights:
            save_eval_weights(run_dir, train_steps, env_steps, eval_model, config)
        result = evaluate(eval_env, eval_search, config.eval.episodes, seed=config.run.seed + 777 + train_steps)
        evals.append(result)
        metrics["eval"].write(train_steps, {"env_steps": env_steps, **asdict(result)})
        target = config.run.stop_eval_return
        if target and reached is None and result.mean_return >= target:
            reached = (env_steps, (time.time() - start) / 60)
        if log:
            hns = f" hns {result.human_normalized:.3f}" if result.human_normalized is not None else ""
            print(f"[eval] train {train_steps} env {env_steps}: return {result.mean_return:.1f} "
                  f"± {result.std_return:.1f} over {result.episodes}{hns}", flush=True)
        return result

    try:
        while True:
            replay_ready = replay.num_positions >= min(start_steps, config.run.max_env_steps // 2)
            can_train = replay_ready and train_steps < total_train
            can_act = env_steps < config.run.max_env_steps and (
                not can_train or ratio == 0 or env_steps < start_steps + ratio * train_steps)
            if not can_act and not can_train:
                break
            if can_act:
                temperature = self_play_temperature(config, train_steps)
                if train_steps == 0:  # before training starts, act uniformly at random (EfficientZero)
                    actions, policies = random_policy(train_env.num_envs, spec.num_actions, rng)
                else:
                    # envs that play as the evaluator does
                    greedy = greedy_env_mask(config, greedy_envs_on(config, train_steps))
                    noise = dirichlet_noise(rng, train_env.num_envs, spec.num_actions, config.mcts.dirichlet_alpha)
                    out = actor_search.run(selfplay.observation(), noise, int(rng.integers(2**31)),
                                           root_noise_fraction(config, greedy))
                    actions = self_play_actions(out.visit_counts, temperature, greedy, rng, out.greedy_action)
                    policies = out.policy_target
                blocks, stats = selfplay.step(actions, policies, env_steps)
                for block in blocks:
                    replay.add(block)
                env_steps += stats.env_steps
                milestones.update(env_steps, train_steps)
                recent_returns = (recent_returns + stats.episode_returns)[-20:]
                for ret, length in zip(stats.episode_returns, stats.episode_lengths, strict=True):
                    metrics["selfplay"].write(env_steps, {"episode_return": ret, "episode_length": length,
                                                          "temperature": temperature})
            else:
                while len(pending) <= config.train.inline_sample_lead:  # one batch, or a lead's worth at first
                    beta = beta_schedule(train_steps / total_train, config.replay.beta_start,
                                         config.replay.beta_end)
                    sample = replay.sample(config.train.batch_size, beta, rng)
                    targets = compute_targets(
                        sample_windows(replay, sample, env_steps, train_steps), layout, source, target_model,
                        reanalyze_search if config.train.reanalyze_ratio > 0 else None, settings, rng, device,
                        target_version)
                    pending.append(PendingBatch(sample, targets, targets.training_batch(source)))
                ready = pending.popleft()
                sample, targets = ready.sample, ready.targets
                stats_t = learner.train_step(ready.batch)
                staleness.add(train_steps, targets.sampled_at_step, targets.target_version)
                replay.update_priorities(sample.index, sample.generation, stats_t.priorities, train_steps)
                train_steps += 1
                if train_steps % config.actor.weight_update_interval == 0:
                    _sync(actor_model, learner.acting_model)
                    actor_version = train_steps
                if config.replay.refresh_interval and train_steps % config.replay.refresh_interval == 0:
                    refresh_all_priorities(replay, source, actor_model, actor_version, layout, settings, device,
                                           config.roles.refresh_chunk, env_steps)
                search_latest = config.reanalyze.search_weights == "latest"
                if search_latest and train_steps % config.reanalyze.weight_update_interval == 0:
                    _sync(reanalyze_model, model)
                if train_steps % config.train.target_update_interval == 0:
                    _sync(target_model, model)
                    target_version = train_steps
                    if not search_latest:
                        _sync(reanalyze_model, model)
                if train_steps % 10 == 0 or train_steps in (1, total_train):
                    metrics["train"].write(train_steps, {k: v for k, v in asdict(stats_t).items()
                                                         if k != "priorities"} | {"env_steps": env_steps}
                                             | staleness.take())
                if train_steps % config.eval.interval == 0:
                    result = run_eval()
                    if config.run.stop_eval_return and result.mean_return >= config.run.stop_eval_return:
                        break
            now = time.time()
            if log and now - last_log >= config.run.log_interval_s:
                last_log = now
                elapsed = now - start
                mean_ret = f"{np.mean(recent_returns):.1f}" if recent_returns else "-"
                last_eval = f"{evals[-1].mean_return:.1f}" if evals else "-"
                print(f"[{elapsed:6.0f}s] env {env_steps} ({env_steps / elapsed:.0f}/s) train {train_steps} "
                      f"({train_steps / elapsed:.1f}/s) selfplay return {mean_ret} eval {last_eval} "
                      f"replay {replay.num_positions}", flush=True)
        target = config.run.stop_eval_return or float("inf")
        if evaluated_at != train_steps and (not evals or evals[-1].mean_return < target):
            run_eval()  # the final weights, unless the last interval's evaluation already played them
        save_checkpoint(run_dir / "checkpoint.pt", {
            "model": model.state_dict(), "target_model": target_model.state_dict(),
            "acting_model": learner.acting_model.state_dict(), "eval_model": learner.eval_model.state_dict(),
            "optimizer": learner.optimizer.state_dict(), "train_steps": train_steps, "env_steps": env_steps},
            config=asdict(config))
    finally:
        for writer in metrics.values():
            writer.close()
        train_env.close()
        eval_env.close()
        frames.close()
    summary = RunSummary(
        env_steps=env_steps,
        train_steps=train_steps,
        minutes=(time.time() - start) / 60,
        best_eval_return=max((e.mean_return for e in evals), default=None),
        last_eval_return=evals[-1].mean_return if evals else None,
        reached_target_env_steps=reached[0] if reached else None,
        reached_target_minutes=reached[1] if reached else None,
        run_dir=str(run_dir),
    )
    (run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary
