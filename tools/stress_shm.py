"""Two-process stress of a speedy.shm ring: >= 1 M messages, every read mode, near capacity.

A spawned writer sends sequence-numbered messages with digests (`speedy.shm.stress`), cycling
through every write mode (put, put_batch, put_bytes, put_many and the async aput/aput_batch); the
reader cycles through every read mode (held zero-copy get, get(copy=True), zero-copy and copy
batches, get_bytes, get_many, aget, aget_batch), holding up to 4 zero-copy messages at a time.
Payload sizes are mostly small with a share near the ring's capacity, so the ring is often full
and records land at every wrap offset. Reported: messages, messages per read mode, mismatches
(payload or digest wrong, including held messages re-checked at release), out-of-order,
stalls (no progress within --stall seconds: a deadlock), wall time and rate.

Usage: python tools/stress_shm.py [--messages 1000000] [--capacity 65536] [--seed 0] [--json]
Exit status 1 if anything was lost, torn, reordered or stalled.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info, host_line  # noqa: E402

from speedy.shm import Ring, codec, unlink_owned  # noqa: E402
from speedy.shm.ring import record_size  # noqa: E402
from speedy.shm.stress import READ_MODES, WRITE_MODES, read_plan, run_writer  # noqa: E402


def write_plan(n: int, capacity: int, seed: int, big_share: float) -> list[list]:
    """n [mode, payload bytes] entries: modes in runs of 1-16, sizes small or near capacity."""
    rng = np.random.default_rng(seed)
    overhead = codec.plan({"i": 2**40, "n": capacity, "d": bytes(8)}, {"x": np.zeros(1, np.uint8)}).size_bound
    biggest = capacity - overhead - 16
    assert record_size(overhead + biggest) <= capacity
    big = rng.random(n) < big_share
    sizes = np.where(big, rng.integers(biggest // 2, biggest + 1, n), rng.integers(0, 257, n))
    modes = np.repeat(rng.integers(0, len(WRITE_MODES), n // 8 + 1), 8)[:n]
    return [[WRITE_MODES[m], int(s)] for m, s in zip(modes, sizes, strict=True)]


def read_steps(seed: int) -> list[list]:
    """A cycle of [mode, batch size, messages held] covering every read mode several times."""
    rng = np.random.default_rng(seed + 1)
    return [[mode, int(rng.integers(1, 33)), int(rng.integers(0, 5))] for mode in READ_MODES * 4]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--capacity", type=int, default=65536, help="ring data bytes (multiple of 64)")
    ap.add_argument("--big-share", type=float, default=0.002, help="share of messages of 1/2..1 capacity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stall", type=float, default=30.0, help="seconds without progress that count as a stall")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    host = host_info()
    plan = write_plan(a.messages, a.capacity, a.seed, a.big_share)
    steps = read_steps(a.seed)
    run_id = f"stress{os.getpid()}"
    ring = Ring.create(run_id, "ring", a.capacity)
    reader = ring.reader()
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=run_writer, args=(run_id, "ring", plan, a.stall), daemon=True)
    t0 = time.monotonic()
    try:
        writer.start()
        report = read_plan(reader, steps, len(plan), timeout=a.stall)
        wall = time.monotonic() - t0
        writer.join(10)
    finally:
        if writer.is_alive():
            writer.kill()
        reader.close()
        ring.close()
        unlink_owned()
    out = {"host": host, "messages_sent": len(plan), "messages_received": report.messages,
           "write_modes": sorted({m for m, _ in plan}), "read_modes": report.by_mode,
           "big_messages": sum(s > a.capacity // 4 for _, s in plan), "capacity": a.capacity,
           "mismatches": report.mismatches, "out_of_order": report.out_of_order, "stalls": report.stalls,
           "errors": report.errors, "wall_s": round(wall, 1), "msgs_per_s": round(report.messages / wall),
           "writer_exit": writer.exitcode, "clean": report.clean and report.messages == len(plan)}
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(host_line(host))
        print(f"{out['messages_received']:,} / {out['messages_sent']:,} messages in {out['wall_s']} s "
              f"({out['msgs_per_s']:,}/s), ring {a.capacity} B, {out['big_messages']:,} near capacity")
        print("read modes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.by_mode.items())))
        print(f"mismatches {report.mismatches}, out of order {report.out_of_order}, stalls {report.stalls}, "
              f"errors {report.errors or 'none'}; clean: {out['clean']}")
    sys.exit(0 if out["clean"] else 1)


if __name__ == "__main__":
    main()
