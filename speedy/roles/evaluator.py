"""Evaluator: every `eval.interval` training steps, greedy episodes on the evaluation protocol with the latest
weights (or the Polyak average of `train.acting_ema_decay`, or the evaluator's own of `eval.ema_decay`); raw score
(and human-normalised score for Atari) to metrics and the board. Reaching `run.stop_eval_return` is recorded on the
board, and the node agent stops the run."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from speedy.checkpoint import save_eval_weights
from speedy.components import search_config
from speedy.evaluate import evaluate, make_eval_env
from speedy.roles.context import RoleContext, eval_slot
from speedy.search import ModelSearch


async def run_evaluator(ctx: RoleContext) -> None:
    config = ctx.config
    env = make_eval_env(config, config.eval.episodes)
    model = ctx.new_model()
    search = ModelSearch(model, search_config(config, ctx.task, config.eval.num_simulations), ctx.device)
    executor = ThreadPoolExecutor(1, thread_name_prefix="eval")
    loop = asyncio.get_running_loop()
    next_eval = config.eval.interval
    ctx.row.set("eval_train_steps", -1)
    try:
        while not ctx.stopping:
            ctx.row.beat()
            final = ctx.board.control("final_eval") != 0 and ctx.row.get("eval_train_steps") < ctx.train_steps()
            if ctx.train_steps() < next_eval and not final:
                with ctx.row.timed("wait_input"):
                    await asyncio.sleep(0.1)
                continue
            version = ctx.pull_weights(model, eval_slot(config))
            env_steps = ctx.total_env_steps()
            if config.eval.keep_weights:
                save_eval_weights(ctx.spec.run_dir, version, env_steps, model, config)
            result = await ctx.timed_search(search, loop.run_in_executor(
                executor, evaluate, env, search, config.eval.episodes, config.run.seed + 777 + version), "busy_env")
            ctx.row.add("evals", 1)
            ctx.row.set("eval_return", result.mean_return)
            ctx.row.set("eval_hns", result.human_normalized if result.human_normalized is not None else float("nan"))
            ctx.row.set("eval_train_steps", version)
            ctx.row.set("eval_env_steps", env_steps)
            ctx.metrics.write(version, {"env_steps": env_steps, **asdict(result)})
            target = config.run.stop_eval_return
            if target and result.mean_return >= target and ctx.board.control("target_reached_env_steps") == 0:
                ctx.board.set_control("target_reached_env_steps", env_steps)
                ctx.board.set_control("target_reached_time", time.time())
            next_eval = (max(version, ctx.train_steps()) // config.eval.interval + 1) * config.eval.interval
    finally:
        executor.shutdown(wait=True)
        env.close()
