"""Actor: self-play with batched MCTS; trajectory blocks to replay; frames once into this actor's frame store.

The actor's envs are split into `roles.search_groups` groups searched in turn: while one group's inference runs in
the worker thread, the event loop does the other group's tree work. Weights are pulled every
`actor.weight_update_interval` training steps; collection pauses while env steps run ahead of the data/update bound.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from speedy.components import (
    env_options,
    greedy_env_mask,
    greedy_envs_on,
    root_noise_fraction,
    search_config,
    self_play_temperature,
)
from speedy.config import Config
from speedy.envs import make_vector_env
from speedy.mcts import dirichlet_noise, self_play_actions
from speedy.roles.context import Periodic, RoleContext, acting_slot
from speedy.roles.messages import Outbox
from speedy.search import ModelSearch, SearchRequest
from speedy.selfplay import SelfPlay, random_policy
from speedy.shm.frames import FrameStore
from speedy.shm.mux import mux_writer


def collect_allowed(config: Config, env_steps: int, train_steps: int, replay_positions: int, replay_restarted: bool,
                    room: int, resumed_env_steps: int = 0) -> bool:
    """The data/update bound: whether actors may step their envs with `env_steps` (all actors' total) taken,
    `train_steps` done and `replay_positions` held by replay. Env steps stay below start + ratio · train steps.
    Before the first training step the bound is `resumed_env_steps` (a resumed run's credit, else 0) + start +
    `room` for the transitions not yet emitted as blocks (each env holds up to L + K + n), so replay surely reaches
    `replay.start_env_steps`; that bound holds even while replay has not ingested them yet (a replay slow to start
    must not let actors spend the env-step budget acting at random, and hold actors past the bound for the whole
    run). A replay holding fewer than `replay.start_env_steps` positions once training has started, or after a
    restart, lost its buffer (killed, or a run resumed without it): actors then always collect, or nothing could
    refill it."""
    ratio = config.train.env_steps_per_train_step
    start = config.replay.start_env_steps
    if ratio == 0 or (replay_positions < start and (train_steps > 0 or replay_restarted)):
        return True
    if train_steps == 0:
        return env_steps < resumed_env_steps + start + room
    return env_steps < start + ratio * train_steps


def may_collect(ctx: RoleContext) -> bool:
    """collect_allowed with this run's board: every actor's env steps, the trainer's steps, replay's positions."""
    room = ctx.config.actor.num_envs * ctx.spec.plan.actors * (ctx.layout.block_length + ctx.layout.lookahead)
    return collect_allowed(ctx.config, ctx.total_env_steps(), ctx.train_steps(), int(ctx.board.get("replay", "items")),
                           ctx.board.get("replay", "restarts") > 0, room, int(ctx.board.control("resumed_env_steps")))


async def search_choices(ctx: RoleContext, search: ModelSearch, plays: list[SelfPlay], executor: ThreadPoolExecutor,
                         temperature: float, greedy: list[np.ndarray], noise_fractions: list[np.ndarray],
                         rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Search every env group (pipelined) → per group: actions (N,) sampled at `temperature` (the greedy one
    and no root noise where that group's `greedy` (N,) bool is set; `noise_fractions` (N,) per group, from
    root_noise_fraction) and the policy targets (N, A) to store (mcts.policy_target: by default the visit
    distributions)."""
    alpha = ctx.config.mcts.dirichlet_alpha
    requests = [SearchRequest(p.observation(), dirichlet_noise(rng, p.env.num_envs, ctx.task.num_actions, alpha),
                              int(rng.integers(2**31)), f)
                for p, f in zip(plays, noise_fractions, strict=True)]
    outputs = await ctx.timed_search(search, search.run_pipelined(requests, executor))
    return [(self_play_actions(out.visit_counts, temperature, g, rng, out.greedy_action),
             out.policy_target)
            for out, g in zip(outputs, greedy, strict=True)]


async def run_actor(ctx: RoleContext) -> None:
    config, index = ctx.config, ctx.spec.index
    groups = max(1, min(ctx.config.roles.search_groups, config.actor.num_envs))
    sizes = np.diff(np.linspace(0, config.actor.num_envs, groups + 1).astype(int))
    frames = FrameStore.attach(ctx.spec.run_id, f"frames{index}")
    seed = config.run.seed + 1000 * (index + 1) + 100 * int(ctx.row.get("restarts"))
    envs = [make_vector_env(config.env.id, int(n), seed=seed + g, mode="train", **env_options(config))
            for g, n in enumerate(sizes)]
    plays = [SelfPlay(env, frames, index, ctx.layout, seed + g) for g, env in enumerate(envs)]

    def greedy_groups(on: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per group: the envs that play greedily (N,) bool and their root-noise fractions (N,)."""
        masks = np.split(greedy_env_mask(config, on), np.cumsum(sizes)[:-1])
        return masks, [root_noise_fraction(config, m) for m in masks]

    greedy_phases = {on: greedy_groups(on) for on in (False, True)}  # actor.greedy_envs off / on (greedy_envs_from)
    model = ctx.new_model()
    version = await ctx.wait_for_weights(model, acting_slot(config))
    search = ModelSearch(model, search_config(config, ctx.task, acts_greedily=config.actor.greedy_envs > 0), ctx.device)
    # Before the first env step: a first search that compiles while the trainer trains would leave this actor on its
    # first weights for the seconds it takes (the trainer does not wait for actors)
    search.warm_up([p.observation() for p in plays])
    blocks_out = Outbox(mux_writer(ctx.spec.run_id, "blocks", index), lambda: ctx.stopping)
    rng = np.random.default_rng(seed)
    budget = config.run.max_env_steps // ctx.spec.plan.actors
    executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
    report = Periodic(config.run.log_interval_s)
    returns: list[float] = []
    slow_env_s = config.roles.slow_actor_env_s if index == 0 else 0.0
    try:
        while not ctx.stopping and ctx.row.get("env_steps") < budget:
            ctx.row.beat()
            if await ctx.wait_while_paused("wait_output"):
                continue
            if not may_collect(ctx):
                with ctx.row.timed("wait_output"):
                    await asyncio.sleep(0.01)
                continue
            if ctx.train_steps() >= version + config.actor.weight_update_interval:
                version = max(version, ctx.pull_weights(model, acting_slot(config)))
                ctx.row.set("weights_version", version)
            temperature = self_play_temperature(config, ctx.train_steps())
            if ctx.train_steps() == 0:  # before training starts, act uniformly at random (EfficientZero)
                choices = [random_policy(p.env.num_envs, ctx.task.num_actions, rng) for p in plays]
            else:
                greedy, noise_fractions = greedy_phases[greedy_envs_on(config, ctx.train_steps())]
                choices = await search_choices(ctx, search, plays, executor, temperature, greedy, noise_fractions,
                                               rng)
            for play, (actions, policies) in zip(plays, choices, strict=True):
                with ctx.row.timed("busy_env"):
                    blocks, stats = play.step(actions, policies, ctx.total_env_steps())
                    if slow_env_s:
                        time.sleep(slow_env_s)  # testing aid: a slow emulator blocks the loop like a real one
                ctx.row.add("env_steps", stats.env_steps)
                ctx.row.add("episodes", len(stats.episode_returns))
                returns = (returns + stats.episode_returns)[-20:]
                if stats.episode_returns:
                    ctx.row.set("episode_return", float(np.mean(returns)))
                for block in blocks:
                    with ctx.row.timed("wait_output"):
                        await blocks_out.send(block)
                    ctx.row.add("items", 1)
            if report.due():
                ctx.write_stats({"temperature": temperature})
    finally:
        executor.shutdown(wait=True)
        for env in envs:
            env.close()
        blocks_out.close()
        frames.close()
