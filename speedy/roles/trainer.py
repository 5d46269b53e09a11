"""Trainer: ready batches from the reanalyzers → optimizer steps; publishes weights and priorities.

A prefetch task gathers the next batches' frames (by ref, from the node's frame stores) while the current step runs
in a worker thread. Weights go to the shared slot every min(actor, reanalyzer) update interval; the target slot
every `train.target_update_interval`. On stop it writes the final checkpoint.

With `roles.trainers` > 1 this is one of several DDP trainers (speedy/cluster/ddp.py): trainer t reads its own
batches channel (`batch_mux(t)`; reanalyzers send each batch to the emptiest), sends the priorities of its own
batches, and before every step all trainers agree to take it, so they stop after the same step. Trainer 0 alone
publishes weights and writes checkpoints.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from speedy.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_latest,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_digest,
)
from speedy.cluster.ddp import join_trainer_group
from speedy.learner import Learner
from speedy.losses import TrainingBatch
from speedy.metrics import BatchStaleness
from speedy.reanalyze import BatchTargets
from speedy.roles.context import (
    ACTING_WEIGHTS,
    EVAL_WEIGHTS,
    FRAME_WAIT_S,
    LATEST_WEIGHTS,
    TARGET_WEIGHTS,
    Periodic,
    RoleContext,
    acting_slot,
    batch_mux,
    cancel_until_done,
    eval_slot,
)
from speedy.roles.messages import Inbox, Outbox, PriorityUpdate
from speedy.shm.frames import FrameEvictedError
from speedy.shm.mux import MuxReader, mux_writer
from speedy.shm.weights import WeightSlot


class CheckpointSchedule:
    """Due every `every_steps` training steps or `every_min` minutes, whichever comes first (0 = that one off)."""

    def __init__(self, every_steps: int, every_min: float) -> None:
        self.every_steps, self.every_s = every_steps, 60.0 * every_min
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        now = time.monotonic()
        if (self.every_steps and step % self.every_steps == 0) or (self.every_s and now - self.last >= self.every_s):
            self.last = now
            return True
        return False


def checkpoint_path(ctx: RoleContext) -> Path:
    return Path(ctx.spec.run_dir) / CHECKPOINT_NAME


def write_checkpoint(ctx: RoleContext, learner: Learner, target: WeightSlot) -> None:
    """Model, target model (from its weight slot), optimizer, counters and this process's RNG states, written
    atomically with the previous checkpoint kept (speedy.checkpoint)."""
    _, flat_views = target.read_state_dict()
    target_state = {k: v.clone() for k, v in flat_views.items()}  # views of one buffer: torch.save wants own storage
    save_checkpoint(checkpoint_path(ctx), {
        "model": learner.model.state_dict(), "target_model": target_state,
        "acting_model": learner.acting_model.state_dict(), "eval_model": learner.eval_model.state_dict(),
        "optimizer": learner.optimizer.state_dict(), "train_steps": learner.step,
        "env_steps": ctx.total_env_steps(), "rng": rng_state()}, config=asdict(ctx.config))


def restore_optimizer(ctx: RoleContext, learner: Learner) -> None:
    """On a resumed run or a restarted trainer (weights past step 0): the optimizer state and RNG states of the
    newest usable checkpoint, if it is not ahead of the weights."""
    path = checkpoint_path(ctx)
    if learner.step == 0 or not (path.exists() or previous_path(path).exists()):
        return
    try:
        record = load_latest(path, "cpu", asdict(ctx.config), warn=lambda m: print(f"[trainer] {m}"))
    except CheckpointError as err:
        print(f"[trainer] optimizer state not restored: {err}", flush=True)
        return
    if record["train_steps"] > learner.step:
        return
    learner.optimizer.load_state_dict(record["optimizer"])
    set_rng_state(record["rng"])
    print(f"[trainer] resumed at step {learner.step}: weights {state_digest(learner.model.state_dict())[:16]}, "
          f"optimizer state of step {record['train_steps']} {state_digest(record['optimizer']['state'])[:16]}",
          flush=True)


async def run_trainer(ctx: RoleContext) -> None:
    config, rank, trainers = ctx.config, ctx.spec.index, ctx.spec.plan.trainers
    model = ctx.new_model()
    await ctx.wait_for_weights(model)  # the node agent publishes the initial weights (or the last ones on restart)
    group = join_trainer_group(rank, trainers, ctx.spec.plan.ddp_port, ctx.device) if trainers > 1 else None
    learner = Learner(model, config, ctx.task.frame_stack, ctx.device, data_parallel=group is not None, rank=rank)
    learner.step = max(0, ctx.weights_version())
    if acting_slot(config) == ACTING_WEIGHTS:  # go on averaging from the published average (a restart keeps it)
        await ctx.wait_for_weights(learner.acting_model, ACTING_WEIGHTS)
    if eval_slot(config) == EVAL_WEIGHTS:  # the evaluator's average too
        await ctx.wait_for_weights(learner.eval_model, EVAL_WEIGHTS)
    restore_optimizer(ctx, learner)
    ctx.row.set("train_steps", learner.step)
    publisher = rank == 0
    batches_in = Inbox(MuxReader.attach(ctx.spec.run_id, batch_mux(rank)), lambda: ctx.stopping)
    priorities_out = Outbox(mux_writer(ctx.spec.run_id, "priorities", rank), lambda: ctx.stopping)
    latest = WeightSlot.attach(ctx.spec.run_id, LATEST_WEIGHTS)
    target = WeightSlot.attach(ctx.spec.run_id, TARGET_WEIGHTS)
    acting = WeightSlot.attach(ctx.spec.run_id, ACTING_WEIGHTS) if acting_slot(config) == ACTING_WEIGHTS else None
    evaluated = WeightSlot.attach(ctx.spec.run_id, EVAL_WEIGHTS) if eval_slot(config) == EVAL_WEIGHTS else None
    frames = ctx.frame_source()
    publish_every = min(config.actor.weight_update_interval, config.reanalyze.weight_update_interval)
    total = config.total_train_steps
    queue: asyncio.Queue[tuple[BatchTargets, TrainingBatch]] = asyncio.Queue(config.roles.trainer_prefetch)
    executor = ThreadPoolExecutor(1, thread_name_prefix="train")
    loop = asyncio.get_running_loop()
    report = Periodic(config.run.log_interval_s)
    slow_s = config.roles.slow_trainer_s
    staleness = BatchStaleness()
    checkpoints = CheckpointSchedule(config.run.checkpoint_interval_steps, config.run.checkpoint_interval_min)

    def train_step(batch: TrainingBatch):  # noqa: ANN202 - the learner's step statistics
        if slow_s:
            time.sleep(slow_s)  # testing aid: a slower device
        return learner.train_step(batch)

    async def prefetch() -> None:
        while not ctx.stopping:
            with ctx.row.timed("wait_input"):
                targets = await batches_in.receive(BatchTargets)
            if targets is None:
                return
            # On a cluster's trainer node the frame stores are replicas pulled from the data node and can trail
            # the batches by a pull period; frames that never arrive: the batch is dropped.
            if not await ctx.wait_until(lambda t=targets: frames.published(t.frame_refs), timeout_s=FRAME_WAIT_S):
                continue
            with ctx.row.timed("transport"):
                try:
                    batch = targets.training_batch(frames)
                except FrameEvictedError:
                    continue
            with ctx.row.timed("wait_output"):
                await queue.put((targets, batch))

    async def next_batch() -> tuple[BatchTargets, TrainingBatch] | None:
        """The next prefetched batch, or None to stop (the run is stopping or the last step is done)."""
        while not ctx.stopping and learner.step < total:
            ctx.row.beat()
            if await ctx.wait_while_paused():
                continue
            with ctx.row.timed("wait_input"):
                try:
                    async with asyncio.timeout(0.25):  # not wait_for: see speedy/shm/doorbell.py
                        return await queue.get()
                except TimeoutError:
                    continue
        return None

    def publish_latest() -> None:
        latest.publish_state_dict(model.state_dict(), learner.step)
        if acting is not None:
            acting.publish_state_dict(learner.acting_model.state_dict(), learner.step)
        if evaluated is not None:
            evaluated.publish_state_dict(learner.eval_model.state_dict(), learner.step)

    async def train() -> None:
        while True:
            item = await next_batch()
            if group is not None:
                with ctx.row.timed("wait_input"):  # a peer still waits for its batch
                    go_on = await loop.run_in_executor(executor, group.agree, item is not None)
                if not go_on:
                    return
            if item is None:
                return
            targets, batch = item
            with ctx.row.timed("busy_train"):
                stats = await loop.run_in_executor(executor, train_step, batch)
            ctx.row.set("train_steps", learner.step)
            staleness.add(learner.step - 1, targets.sampled_at_step, targets.target_version)
            with ctx.row.timed("wait_output"):
                await priorities_out.send(PriorityUpdate(targets.index, targets.generation, stats.priorities,
                                                         learner.step - 1))  # the weights the step started from
            if publisher and learner.step % publish_every == 0:
                with ctx.row.timed("weights"):
                    publish_latest()
            if publisher and learner.step % config.train.target_update_interval == 0:
                with ctx.row.timed("weights"):
                    target.publish_state_dict(model.state_dict(), learner.step)
            if learner.step % 10 == 0 or report.due():
                ctx.write_stats({k: v for k, v in asdict(stats).items() if k != "priorities"} | staleness.take())
            if publisher and checkpoints.due(learner.step):
                with ctx.row.timed("weights"):
                    write_checkpoint(ctx, learner, target)

    feeder = asyncio.ensure_future(prefetch())
    try:
        await train()
    finally:
        await cancel_until_done(feeder)
        executor.shutdown(wait=True)
        if publisher:
            publish_latest()
            write_checkpoint(ctx, learner, target)
        if group is not None:
            group.close()
        batches_in.close()
        priorities_out.close()
        latest.close()
        target.close()
        if acting is not None:
            acting.close()
