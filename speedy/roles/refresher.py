"""Priority refresher (SpeedyZero's Priority Refresh): sweeps the whole buffer in chunks with weights at most
`actor.weight_update_interval` training steps old, setting priority = |ẑ − v(s)| with ẑ the n-step target
bootstrapped with the same model (forward passes only, no search). Replay counts the sweeps; the sweep period in
training steps bounds how stale any priority can be."""

from __future__ import annotations

import asyncio

from speedy.components import reanalyze_settings
from speedy.reanalyze import SampleWindows, refreshed_priorities
from speedy.roles.context import Periodic, RoleContext, acting_slot
from speedy.roles.messages import Inbox, Outbox, PriorityUpdate
from speedy.shm.frames import FrameEvictedError
from speedy.shm.mux import mux_writer
from speedy.shm.ring import Ring


async def run_refresher(ctx: RoleContext) -> None:
    config, index = ctx.config, ctx.spec.index
    chunks_in = Inbox(Ring.attach(ctx.spec.run_id, f"refresh{index}").reader(), lambda: ctx.stopping)
    priorities_out = Outbox(mux_writer(ctx.spec.run_id, "priorities", ctx.spec.plan.trainers + index),
                            lambda: ctx.stopping)  # after the trainers' rings
    frames = ctx.frame_source()
    model = ctx.new_model()
    version = await ctx.wait_for_weights(model, acting_slot(config))
    settings = reanalyze_settings(config, ctx.task)
    report = Periodic(config.run.log_interval_s)
    loop = asyncio.get_running_loop()
    try:
        while not ctx.stopping:
            ctx.row.beat()
            with ctx.row.timed("wait_input"):
                windows = await chunks_in.receive(SampleWindows)
            if windows is None:
                return
            if ctx.train_steps() >= version + config.actor.weight_update_interval:
                version = max(version, ctx.pull_weights(model, acting_slot(config)))
                ctx.row.set("weights_version", version)
            try:
                with ctx.row.timed("busy_inference"):
                    priorities = await loop.run_in_executor(None, refreshed_priorities, windows, ctx.layout, frames,
                                                            model, settings, ctx.device)
            except FrameEvictedError:
                continue
            with ctx.row.timed("wait_output"):
                await priorities_out.send(PriorityUpdate(windows.index, windows.generation, priorities, version))
            ctx.row.add("items", len(priorities))
            if report.due():
                ctx.write_stats({"mean_priority": float(priorities.mean())})
    finally:
        chunks_in.close()
        priorities_out.close()


