"""Reanalyzer: sample windows from replay → value, value-prefix and re-searched policy targets → trainer.

`roles.batches_in_flight` batches are worked on at once, each in its own worker thread, so one batch's tree work
overlaps another's inference. The target model follows the trainer's target slot; the policy search uses it too
(`reanalyze.search_weights = "target"`, EfficientZero) or recent weights every `reanalyze.weight_update_interval`
training steps ("latest").
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from speedy.components import reanalyze_settings, search_config
from speedy.reanalyze import SampleWindows, compute_targets
from speedy.roles.context import FRAME_WAIT_S, LATEST_WEIGHTS, TARGET_WEIGHTS, Periodic, RoleContext, batch_mux
from speedy.roles.messages import Inbox, Outbox
from speedy.search import ModelSearch
from speedy.shm.frames import FrameEvictedError
from speedy.shm.mux import mux_writer
from speedy.shm.ring import Ring


class TimedInference:
    """A model seen through its `initial_inference`, counting that call's seconds (the target model's bootstrap
    forward passes inside the target computation), so the reanalyzer can report them as inference."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.inference_seconds = 0.0

    def eval(self) -> TimedInference:
        self.model.eval()
        return self

    def initial_inference(self, obs: torch.Tensor):  # noqa: ANN201 - the model's output type
        start = time.perf_counter()
        try:
            return self.model.initial_inference(obs)
        finally:
            self.inference_seconds += time.perf_counter() - start


async def run_reanalyzer(ctx: RoleContext) -> None:
    config, index = ctx.config, ctx.spec.index
    samples_in = Inbox(Ring.attach(ctx.spec.run_id, f"samples{index}").reader(), lambda: ctx.stopping)
    batches_out = Outbox([mux_writer(ctx.spec.run_id, batch_mux(t), index) for t in range(ctx.spec.plan.trainers)],
                         lambda: ctx.stopping)  # several DDP trainers: to the one with the most room
    frames = ctx.frame_source()
    settings = reanalyze_settings(config, ctx.task)
    in_flight = config.roles.batches_in_flight
    executor = ThreadPoolExecutor(in_flight, thread_name_prefix="reanalyze")
    loop = asyncio.get_running_loop()
    report = Periodic(config.run.log_interval_s)
    slow_s = config.roles.slow_reanalyzer_s if index == 0 or config.roles.slow_reanalyzers == "all" else 0.0
    computed = 0  # batches of this process (slow_s is due every roles.slow_reanalyzer_every-th: a pause)

    # Each in-flight batch has its own recent and target model (weights are swapped only between its batches,
    # never under another thread's forward pass) and its own search.
    models = [ctx.new_model() for _ in range(in_flight)]
    target_models = [ctx.new_model() for _ in range(in_flight)]
    timed_targets = [TimedInference(m) for m in target_models]
    searches = [ModelSearch(m, search_config(config, ctx.task, acts_greedily=False), ctx.device) for m in models]
    search_slot = TARGET_WEIGHTS if config.reanalyze.search_weights == "target" else LATEST_WEIGHTS
    versions = [await ctx.wait_for_weights(m, search_slot) for m in models]
    target_versions = [await ctx.wait_for_weights(m, TARGET_WEIGHTS) for m in target_models]
    use_search = config.train.reanalyze_ratio > 0

    def refresh_weights(k: int) -> None:
        due = (ctx.weights_version(TARGET_WEIGHTS) > versions[k] if search_slot == TARGET_WEIGHTS
               else ctx.train_steps() >= versions[k] + config.reanalyze.weight_update_interval)
        if due:
            versions[k] = max(versions[k], ctx.pull_weights(models[k], search_slot))
            ctx.row.set("weights_version", versions[k])
        if ctx.weights_version(TARGET_WEIGHTS) > target_versions[k]:
            target_versions[k] = ctx.pull_weights(target_models[k], TARGET_WEIGHTS)

    async def worker(k: int) -> None:
        nonlocal computed
        rng = np.random.default_rng(config.run.seed + 31 * index + k)
        while not ctx.stopping:
            with ctx.row.timed("wait_input"):
                windows = await samples_in.receive(SampleWindows)
            if windows is None:
                return
            # On a cluster node the frame stores are replicas pulled from node 0 and can trail the samples by a
            # pull period (on one box the frames are always there); frames that never arrive: replay samples again.
            if not await ctx.wait_until(lambda w=windows: frames.published(w.frame_refs), timeout_s=FRAME_WAIT_S):
                continue
            refresh_weights(k)
            search = searches[k]
            tree, inference = search.tree_seconds, search.inference_seconds + timed_targets[k].inference_seconds
            try:
                with ctx.row.timed("busy_targets") as span:  # split below into tree, inference and the rest
                    targets = await loop.run_in_executor(
                        executor, compute_targets, windows, ctx.layout, frames, timed_targets[k],
                        search if use_search else None, settings, rng, ctx.device, target_versions[k])
            except FrameEvictedError:
                continue  # its block was evicted while in flight; the next sample is fresh
            inference = search.inference_seconds + timed_targets[k].inference_seconds - inference
            span.split({"busy_tree": search.tree_seconds - tree, "busy_inference": inference})
            computed += 1
            if slow_s and computed % config.roles.slow_reanalyzer_every == 0:
                with ctx.row.timed("busy_targets"):
                    await asyncio.sleep(slow_s)
            with ctx.row.timed("wait_output"):
                await batches_out.send(targets)
            ctx.row.add("items", 1)

    async def beat() -> None:
        while not ctx.stopping:
            ctx.row.beat()
            if report.due():
                ctx.write_stats({})
            await asyncio.sleep(0.1)

    try:
        await asyncio.gather(beat(), *(worker(k) for k in range(in_flight)))
    finally:
        executor.shutdown(wait=True)
        samples_in.close()
        batches_out.close()
