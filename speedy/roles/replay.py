"""Replay: stores actors' blocks, serves sample windows to reanalyzers and refresh chunks to refreshers, applies
priority updates from the trainer and the refreshers. One asyncio task per input and per consumer; the rings'
back-pressure paces sampling (a reanalyzer that is busy simply has a full ring), and a sample is drawn only when its
ring has room for it, so it waits in the ring but never in replay's hands (`sample_lead_steps` counts both)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np

from speedy.checkpoint import save_arrays
from speedy.reanalyze import sample_windows
from speedy.replay import ReplayBuffer, TrajectoryBlock
from speedy.roles.context import Periodic, RoleContext
from speedy.roles.messages import Inbox, Outbox, PriorityUpdate
from speedy.shm.mux import MuxReader
from speedy.shm.ring import Ring
from speedy.targets import beta_schedule

SNAPSHOT = "replay.npz"  # written by the replay role when the run stops
RESUME_SNAPSHOT = "replay.resume.npz"  # put in place by the node agent for `--resume`, consumed once


def snapshot_state(replay: ReplayBuffer, rng: np.random.Generator, serial: int) -> dict[str, np.ndarray]:
    """A copy of the buffer, the sampling RNG and the snapshot's serial (numpy arrays only: loading runs no code)."""
    state = {k: np.array(v, copy=True) for k, v in replay.state_dict().items()}
    return state | {"sampler_rng": np.array(json.dumps(rng.bit_generator.state)),
                    "snapshot_serial": np.asarray(serial, np.int64)}


def save_snapshot(run_dir: Path, replay: ReplayBuffer, rng: np.random.Generator, serial: int = -1) -> Path:
    """Write the buffer and the sampling RNG to run_dir/replay.npz atomically."""
    return save_arrays(run_dir / SNAPSHOT, snapshot_state(replay, rng, serial))


def load_snapshot(run_dir: Path, replay: ReplayBuffer, rng: np.random.Generator) -> bool:
    """Fill `replay` (and `rng`) from run_dir/replay.resume.npz if the agent put one there; it is used once
    (renamed to replay.resumed.npz), so a later restart of this role does not reload stale data."""
    path = run_dir / RESUME_SNAPSHOT
    if not path.exists():
        return False
    with np.load(path, allow_pickle=False) as saved:
        state = dict(saved)
    state.pop("snapshot_serial", None)
    rng.bit_generator.state = json.loads(str(state.pop("sampler_rng")))
    replay.load_state_dict(state)
    os.replace(path, run_dir / "replay.resumed.npz")
    return True


async def run_replay(ctx: RoleContext) -> None:
    config = ctx.config
    replay = ReplayBuffer(ctx.layout, config.replay.capacity, config.replay.alpha, config.replay.priority_eps)
    rng = np.random.default_rng(config.run.seed + 7)
    run_dir = Path(ctx.spec.run_dir)
    if load_snapshot(run_dir, replay, rng):
        print(f"[replay] resumed with {replay.num_positions} positions", flush=True)
    ctx.row.set("items", replay.num_positions)
    run_id, plan = ctx.spec.run_id, ctx.spec.plan
    stopping = lambda: ctx.stopping  # noqa: E731
    blocks_in = Inbox(MuxReader.attach(run_id, "blocks"), stopping)
    priorities_in = Inbox(MuxReader.attach(run_id, "priorities"), stopping)
    samples_out = [Outbox(Ring.attach(run_id, f"samples{j}").writer(), stopping) for j in range(plan.reanalyzers)]
    refresh_out = [Outbox(Ring.attach(run_id, f"refresh{j}").writer(), stopping) for j in range(plan.refreshers)]
    ready = min(config.replay.start_env_steps, config.run.max_env_steps // 2)
    sweep = {"cursor": 0, "started": -config.replay.refresh_interval}  # cursor in live positions; train step

    async def ingest() -> None:
        while not ctx.stopping:
            with ctx.row.timed("wait_input"):
                block = await blocks_in.receive(TrajectoryBlock)
            if block is None:
                return
            with ctx.row.timed("busy_replay"):
                replay.add(block)
            ctx.row.set("items", replay.num_positions)

    async def apply_priorities() -> None:
        while not ctx.stopping:
            with ctx.row.timed("wait_input"):
                update = await priorities_in.receive(PriorityUpdate)
            if update is None:
                return
            with ctx.row.timed("busy_replay"):
                replay.update_priorities(update.index, update.generation, update.priorities, update.version)
            ctx.row.add("priority_updates", 1)

    async def wait_until_ready() -> None:
        await ctx.wait_until(lambda: replay.num_positions >= max(1, ready), poll_s=0.05)

    async def serve_samples(j: int) -> None:
        await wait_until_ready()
        while not ctx.stopping:
            if await ctx.wait_while_paused("wait_output"):
                continue
            with ctx.row.timed("wait_output"):  # draw only when the sample can go out at once: fresher samples
                if not await samples_out[j].wait_for_room():
                    continue
            with ctx.row.timed("busy_replay"):
                beta = beta_schedule(ctx.training_progress(), config.replay.beta_start, config.replay.beta_end)
                sample = replay.sample(config.train.batch_size, beta, rng)
                windows = sample_windows(replay, sample, ctx.total_env_steps(), ctx.train_steps())
            with ctx.row.timed("wait_output"):
                await samples_out[j].send(windows)

    async def pace_sweep() -> bool:
        """Before a sweep: wait until `replay.refresh_interval` training steps have passed since the last one began
        (0 = no pacing). True if it waited (the caller re-checks pause and stop)."""
        interval = config.replay.refresh_interval
        if ctx.train_steps() >= sweep["started"] + interval:
            sweep["started"] = ctx.train_steps()
            return False
        await ctx.wait_until(lambda: ctx.train_steps() >= sweep["started"] + interval)
        return True

    async def serve_refresh(j: int) -> None:
        await wait_until_ready()
        chunk = config.roles.refresh_chunk
        while not ctx.stopping:
            if await ctx.wait_while_paused("wait_output"):
                continue
            live = replay.live_positions()
            if live.size == 0:
                await asyncio.sleep(0.1)
                continue
            if sweep["cursor"] == 0 and await pace_sweep():
                continue
            start = sweep["cursor"] % live.size
            index = live[start : start + chunk]
            sweep["cursor"] = start + len(index)
            if sweep["cursor"] >= live.size:
                sweep["cursor"] = 0
                ctx.row.add("sweeps", 1)
            with ctx.row.timed("busy_replay"):
                chunk_windows = sample_windows(replay, replay.positions(index), ctx.total_env_steps())
            with ctx.row.timed("wait_output"):
                sent = await refresh_out[j].send(chunk_windows)
            if sent:
                ctx.row.add("refresh_positions", len(index))

    async def snapshots() -> None:
        """When the agent asks (board control 'snapshot' = serial): copy the buffer, write it in a worker thread
        while sampling goes on, then ack the serial in this role's row (the agent then journals the frames)."""
        done = 0.0
        loop = asyncio.get_running_loop()
        while not ctx.stopping:
            serial = ctx.board.control("snapshot")
            if serial and serial != done and not ctx.stopping:
                with ctx.row.timed("busy_replay"):
                    state = snapshot_state(replay, rng, int(serial))
                await loop.run_in_executor(None, save_arrays, run_dir / SNAPSHOT, state)
                done = serial
                ctx.row.set("snapshot_serial", serial)
            await asyncio.sleep(0.2)

    async def report() -> None:
        periodic = Periodic(config.run.log_interval_s)
        while not ctx.stopping:
            ctx.row.beat()
            if periodic.due():
                ctx.write_stats({"positions": replay.num_positions, "blocks_added": replay.blocks_added,
                                 "max_priority": replay.max_priority})
            await asyncio.sleep(0.1)

    tasks = [ingest(), apply_priorities(), report(), snapshots()]
    tasks += [serve_samples(j) for j in range(plan.reanalyzers)]
    tasks += [serve_refresh(j) for j in range(plan.refreshers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        if ctx.stopping:  # a clean stop of the run (not a crash): keep the buffer for --resume
            save_snapshot(run_dir, replay, rng, int(ctx.board.control("snapshot")))
        for end in [*samples_out, *refresh_out]:
            end.close()
        blocks_in.close()
        priorities_in.close()
