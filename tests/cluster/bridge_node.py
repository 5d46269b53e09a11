"""One node of the bridge test, run by torchrun (one process per node, like a node agent).

Node 0 sends `SPEEDY_TEST_MESSAGES` checksummed messages to every other node: a producer thread per peer writes
them into a local ring, a `Forwarder` moves that ring's records to the peer's inbound ring over RPC. Every other
node reads its inbound ring and checks each message (sequence, digest). Each node writes a JSON result to
`SPEEDY_TEST_OUT/rank<r>.json`. Shared memory is per node (run id suffixed with the rank), as on real machines.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from speedy.cluster.bootstrap import init_rpc, set_interface, torchrun_world
from speedy.cluster.bridge import Forwarder, notify_peer, register_inbound, wait_event
from speedy.shm import Ring, unlink_owned
from speedy.shm.stress import make_message, read_plan

CAPACITY = 1 << 16


def produce(ring: Ring, n: int, pause_s: float) -> None:
    writer = ring.writer()
    for i in range(n):
        m = make_message(i, (i * 37) % 3000)
        writer.put(m.fields, m.arrays, timeout=60)
        if pause_s and i % 50 == 49:
            time.sleep(pause_s)
    writer.close()


def sender(world, run_id: str, n: int, out: Path) -> dict:  # noqa: ANN001
    lost: dict[str, float] = {}
    forwarders, producers = [], []
    for peer in range(1, world.world_size):
        ring = Ring.create(run_id, f"out{peer}", CAPACITY)
        producers.append(threading.Thread(target=produce, args=(ring, n, 0.05), daemon=True))
        forwarders.append(Forwarder(ring.reader(), f"node{peer}", "in", timeout_s=30.0, batch=32,
                                    on_lost=lambda p, e: lost.setdefault(p, time.time())))
    for f in forwarders:
        f.start()
    for p in producers:
        p.start()
    for f in forwarders:
        f._thread.join(120)
    for f in forwarders:
        if f.lost is None:
            notify_peer(f.peer, "done", 10.0)
    return {"lost": lost, "finished": {f.peer: f.finished for f in forwarders},
            "delivered": {f.peer: f.stats.records for f in forwarders}}


def receiver(run_id: str, n: int) -> dict:
    ring = Ring.create(run_id, "in", CAPACITY)
    register_inbound("in", ring.writer())
    report = read_plan(ring.reader(), [["get_batch_copy", 16, 0], ["get", 1, 2]], n, timeout=60.0)
    wait_event("done", 30.0)
    return {"messages": report.messages, "clean": report.clean, "mismatches": report.mismatches,
            "out_of_order": report.out_of_order, "errors": report.errors}


def main() -> None:
    world = torchrun_world()
    set_interface("lo")
    out = Path(os.environ["SPEEDY_TEST_OUT"])
    n = int(os.environ["SPEEDY_TEST_MESSAGES"])
    run_id = f"{os.environ['SPEEDY_TEST_RUN']}-n{world.rank}"
    init_rpc(world, timeout_s=30.0)
    (out / f"rank{world.rank}.up").write_text(str(os.getpid()))
    try:
        result = sender(world, run_id, n, out) if world.rank == 0 else receiver(run_id, n)
        (out / f"rank{world.rank}.json").write_text(json.dumps(result))
    finally:
        unlink_owned()
        sys.stdout.flush()
        from torch.distributed import rpc

        rpc.shutdown(graceful=False)
        os._exit(0)


if __name__ == "__main__":
    main()
