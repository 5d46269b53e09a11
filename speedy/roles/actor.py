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

from speedy.components import env_options, greedy_env_mask, root_noise_fraction, search_config, self_play_temperature
from speedy.envs import make_vector_env
from speedy.mcts import dirichlet_noise, self_play_actions, visit_distribution
from speedy.roles.context import Periodic, RoleContext, acting_slot
from speedy.roles.messages import Outbox
from speedy.search import ModelSearch, SearchRequest
from speedy.selfplay import SelfPlay, random_policy
from speedy.shm.frames import FrameStore
from speedy.shm.mux import mux_writer


def may_collect(ctx: RoleContext) -> bool:
    """The data/update bound: env steps stay below start + ratio · train steps. Before the first training step the
    bound also leaves room for the transitions not yet emitted as blocks (each env holds up to L + K + n), so replay
    surely reaches `replay.start_env_steps`; without it, actors acting at random would spend the env-step budget
    while the trainer starts up. While replay holds fewer than `replay.start_env_steps` positions (a restarted
    replay, a run resumed without its buffer) actors always collect, or nothing could ever refill it."""
    config = ctx.config
    ratio = config.train.env_steps_per_train_step
    if ratio == 0 or ctx.board.get("replay", "items") < config.replay.start_env_steps:
        return True  # unbounded, or a replay that lost its buffer (restarted, resumed after a crash) must refill
    train_steps = ctx.train_steps()
    limit = config.replay.start_env_steps + ratio * train_steps
    if train_steps == 0:
        limit += config.actor.num_envs * ctx.spec.plan.actors * (ctx.layout.block_length + ctx.layout.lookahead)
    return ctx.total_env_steps() < limit


async def search_choices(ctx: RoleContext, search: ModelSearch, plays: list[SelfPlay], executor: ThreadPoolExecutor,
                         temperature: float, greedy: list[np.ndarray], noise_fractions: list[np.ndarray],
                         rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Search every env group (pipelined) → per group: actions (N,) sampled at `temperature` (the most-visited one
    and no root noise where that group's `greedy` (N,) bool is set; `noise_fractions` (N,) per group, from
    root_noise_fraction) and the visit distributions (N, A) stored as policy targets."""
    alpha = ctx.config.mcts.dirichlet_alpha
    requests = [SearchRequest(p.observation(), dirichlet_noise(rng, p.env.num_envs, ctx.task.num_actions, alpha),
                              int(rng.integers(2**31)), f)
                for p, f in zip(plays, noise_fractions, strict=True)]
    outputs = await ctx.timed_search(search, search.run_pipelined(requests, executor))
    return [(self_play_actions(out.visit_counts, temperature, g, rng), visit_distribution(out.visit_counts, 1.0))
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
    greedy = np.split(greedy_env_mask(config), np.cumsum(sizes)[:-1])  # per group: envs that play greedily
    noise_fractions = [root_noise_fraction(config, g) for g in greedy]
    model = ctx.new_model()
    version = await ctx.wait_for_weights(model, acting_slot(config))
    search = ModelSearch(model, search_config(config, ctx.task), ctx.device)
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
