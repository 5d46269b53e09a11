"""Benchmark speedy.shm across processes, next to multiprocessing.Queue and np.copyto.

Measures (producer and consumer are separate spawned processes, each pinned to its own core
when the machine has two or more):
  * msgs/s for 64-byte messages: raw batch API (put_many/get_many), codec API one by one
    (put/get), batched codec API (put_batch/get_batch, 64 per batch) and multiprocessing.Queue;
  * GB/s for 28,224-byte (4x84x84 uint8 frame stack) and 1 MiB payloads through the codec API:
    codec_* = producer copies the array in, consumer copies it out of its view (two copies);
    codec_zerocopy_* = consumer uses the zero-copy view and releases it (one copy); next to
    multiprocessing.Queue and a plain single-process np.copyto of the same bytes;
  * CPU % of an idle consumer blocked in get() (and in an asyncio aget()).

The machine is shared, so every figure is the median of --reps repetitions (interleaved, so
load swings hit every metric alike), reported with its min/max and the 1-minute load average
before and after. Children run with one BLAS/OpenMP thread.

Usage: python tools/bench_shm.py [--json] [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import psutil

from speedy.shm import Message, Ring, RingClosedError, unlink_owned

RUN_ID = f"bench{os.getpid()}"
FRAME_STACK = 4 * 84 * 84


def _pin(core: int) -> None:
    """Pin to one core with --pin (inherited by the spawned consumers through the environment). By default
    processes float, as the roles of a run do: on this VM a producer and consumer sharing a core's cache move
    1 MiB messages 3x faster than pinned to different cores (cross-core cache-line transfers dominate)."""
    if os.environ.get("SPEEDY_BENCH_PIN") != "1":
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[core % len(cpus)]})


# --- children ----------------------------------------------------------------------------------
def _raw_consumer(run_id: str, name: str, n: int, results: mp.Queue) -> None:
    _pin(1)
    r = Ring.attach(run_id, name).reader()
    got = 0
    nbytes = 0
    while got < n:
        batch = r.get_many(8192)
        got += len(batch)
        nbytes += sum(map(len, batch))
    results.put((time.perf_counter(), got, nbytes))


def _codec_consumer(run_id: str, name: str, n: int, copy_out: bool, results: mp.Queue) -> None:
    _pin(1)
    r = Ring.attach(run_id, name).reader()
    out = None
    for _ in range(n):
        msg = r.get()
        arr = msg.arrays.get("x")
        if arr is not None and copy_out:
            if out is None:
                out = np.empty_like(arr)
            np.copyto(out, arr)  # consumer really reads the bytes
        msg.release()
    results.put((time.perf_counter(), n, 0))


def _batch_consumer(run_id: str, name: str, n: int, results: mp.Queue) -> None:
    _pin(1)
    r = Ring.attach(run_id, name).reader()
    got = 0
    while got < n:
        batch = r.get_batch(256)
        for msg in batch:
            msg.release()
        got += len(batch)
    results.put((time.perf_counter(), got, 0))


def _queue_consumer(q: mp.Queue, n: int, results: mp.Queue) -> None:
    _pin(1)
    for _ in range(n):
        q.get()
    results.put((time.perf_counter(), n, 0))


def _idle_consumer(run_id: str, name: str, use_async: bool) -> None:
    _pin(1)
    r = Ring.attach(run_id, name).reader()
    try:
        if use_async:
            import uvloop

            uvloop.run(r.aget_bytes())
        else:
            r.get_bytes()
    except RingClosedError:
        pass


# --- measurements ------------------------------------------------------------------------------
def _run_pair(target, args, produce) -> float:
    """Start consumer `target(*args, results)`, run `produce()`, return seconds until consumer done."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, results))
    p.start()
    try:
        time.sleep(0.3)  # let the child attach before timing
        t0 = time.perf_counter()
        produce()
        t_end, _, _ = results.get(timeout=120)
        return t_end - t0
    finally:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()


def bench_raw_small(n: int) -> float:
    ring = Ring.create(RUN_ID, "raw", 1 << 22)
    w = ring.writer()
    batch = [bytes(range(64))] * 1024

    def produce() -> None:
        for _ in range(n // len(batch)):
            w.put_many(batch)

    dt = _run_pair(_raw_consumer, (RUN_ID, "raw", n // 1024 * 1024), produce)
    ring.close()
    return n // 1024 * 1024 / dt


def bench_codec(n: int, nbytes: int, copy_out: bool = True) -> float:
    ring = Ring.create(RUN_ID, f"codec{nbytes}", max(1 << 22, 8 * nbytes + (1 << 16)))
    w = ring.writer()
    payload = np.random.randint(0, 255, nbytes, dtype=np.uint8)

    def produce() -> None:
        if nbytes <= 64:
            for i in range(n):
                w.put({"i": i}, None)
        else:
            for i in range(n):
                w.put({"i": i}, {"x": payload})

    dt = _run_pair(_codec_consumer, (RUN_ID, f"codec{nbytes}", n, copy_out), produce)
    ring.close()
    return n / dt


def bench_codec_batch(n: int, batch: int = 64) -> float:
    """msgs/s of small codec messages ({"i": int} + a 32-byte int64[4] array) via put_batch/get_batch."""
    ring = Ring.create(RUN_ID, "cbatch", 1 << 22)
    w = ring.writer()
    ids = np.arange(4, dtype=np.int64)
    n = n // batch * batch

    def produce() -> None:
        for k in range(0, n, batch):
            w.put_batch([Message({"i": i}, {"ids": ids}) for i in range(k, k + batch)])

    dt = _run_pair(_batch_consumer, (RUN_ID, "cbatch", n), produce)
    ring.close()
    return n / dt


def bench_queue(n: int, nbytes: int) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=1024)
    payload = np.random.randint(0, 255, nbytes, dtype=np.uint8).tobytes()

    def produce() -> None:
        for _ in range(n):
            q.put(payload)

    return n / _run_pair(_queue_consumer, (q, n), produce)


def bench_copyto(nbytes: int, ring_bytes: int, seconds: float = 1.0) -> float:
    """GB/s of np.copyto of `nbytes` into rotating slots of a `ring_bytes` buffer (same footprint as the ring)."""
    src = np.random.randint(0, 255, nbytes, dtype=np.uint8)
    slots = max(1, ring_bytes // nbytes)
    dst = np.empty((slots, nbytes), np.uint8)
    dst[:] = 1
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for k in range(slots):
            np.copyto(dst[k], src)
        n += slots
    return n * nbytes / (time.perf_counter() - t0) / 1e9


def bench_idle(use_async: bool, seconds: float) -> float:
    name = f"idle{int(use_async)}"
    ring = Ring.create(RUN_ID, name, 4096)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_idle_consumer, args=(RUN_ID, name, use_async))
    p.start()
    try:
        time.sleep(1.5)  # import + settle into the sleeping state
        proc = psutil.Process(p.pid)
        c0 = sum(proc.cpu_times()[:2])
        time.sleep(seconds)
        c1 = sum(proc.cpu_times()[:2])
        return 100.0 * (c1 - c0) / seconds
    finally:
        w = ring.writer()
        w.close()
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
        ring.close()


def one_rep(scale: float) -> dict[str, float]:
    """One repetition of every measurement."""
    res: dict[str, float] = {}
    res["raw_64B_msgs_per_s"] = bench_raw_small(int(4_000_000 * scale))
    res["codec_64B_msgs_per_s"] = bench_codec(int(200_000 * scale), 0)
    res["codec_batch_64B_msgs_per_s"] = bench_codec_batch(int(400_000 * scale))
    res["queue_64B_msgs_per_s"] = bench_queue(int(200_000 * scale), 64)
    for label, nbytes, n in (("28KB", FRAME_STACK, 40_000), ("1MiB", 1 << 20, 2_000)):
        n = int(n * scale)
        ring_bytes = max(1 << 22, 8 * nbytes + (1 << 16))
        res[f"codec_{label}_GBps"] = bench_codec(n, nbytes) * nbytes / 1e9
        res[f"queue_{label}_GBps"] = bench_queue(max(n // 4, 100), nbytes) * nbytes / 1e9
        res[f"copyto_{label}_GBps"] = bench_copyto(nbytes, ring_bytes)
        res[f"codec_{label}_vs_copyto"] = res[f"codec_{label}_GBps"] / res[f"copyto_{label}_GBps"]
        res[f"codec_zerocopy_{label}_GBps"] = bench_codec(n, nbytes, copy_out=False) * nbytes / 1e9
        res[f"codec_zerocopy_{label}_vs_copyto"] = (res[f"codec_zerocopy_{label}_GBps"]
                                                     / res[f"copyto_{label}_GBps"])
    res["idle_consumer_cpu_pct"] = bench_idle(False, 3.0 * max(scale, 0.5))
    res["idle_async_consumer_cpu_pct"] = bench_idle(True, 3.0 * max(scale, 0.5))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="fewer messages (noisier)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median is reported (default 3)")
    ap.add_argument("--pin", action="store_true",
                    help="pin producer and consumer to different cores (default: let them float, as roles do)")
    a = ap.parse_args()
    if a.pin:
        os.environ["SPEEDY_BENCH_PIN"] = "1"
    if a.reps < 1:
        raise SystemExit(f"--reps must be >= 1, got {a.reps}")
    _pin(0)
    scale = 0.25 if a.quick else 1.0
    load_before = os.getloadavg()[0]
    reps: list[dict[str, float]] = []
    try:
        for _ in range(a.reps):
            reps.append(one_rep(scale))
    finally:
        unlink_owned()
    load_after = os.getloadavg()[0]
    table = {k: {"median": statistics.median(r[k] for r in reps), "min": min(r[k] for r in reps),
                 "max": max(r[k] for r in reps)} for k in reps[0]}
    meta = {"reps": a.reps, "quick": a.quick, "cpus": os.cpu_count(), "loadavg_1min_before": load_before,
            "loadavg_1min_after": load_after}
    if a.json:
        print(json.dumps({"meta": meta, "results": table}, indent=1))
        return
    print(f"# {a.reps} reps, median [min .. max]; {os.cpu_count()} CPUs; "
          f"1-min load average {load_before:.2f} before, {load_after:.2f} after")
    for k, v in table.items():
        print(f"{k:36s} {v['median']:14,.3f}   [{v['min']:,.3f} .. {v['max']:,.3f}]")


if __name__ == "__main__":
    main()
