"""Property tests with real processes: a spawned echo server relays records from ring A to ring B.

Random record sizes, batch sizes and small capacities force wrap-around, full and empty rings;
every record must come back exactly once, in order, bytes intact.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedy.shm import Ring

from ._children import echo_server
from .conftest import start, stop

_job = itertools.count()


@pytest.fixture
def echo(run_id, ctx):
    ctl = Ring.create(run_id, "ctl", 4096)
    w = ctl.writer()
    p = start(ctx, echo_server, run_id, "ctl")
    try:
        yield run_id, w
    finally:
        w.close()
        stop(p)
        ctl.close()


def _relay(run_id, ctl, capacity, mode, batch, send, n):
    k = next(_job)
    a = Ring.create(run_id, f"a{k}", capacity)
    b = Ring.create(run_id, f"b{k}", capacity)
    wa, rb = a.writer(), b.reader()
    received = []

    def consume():
        while len(received) < n:
            if mode == "raw":
                received.extend(rb.get_many(7, timeout=10))
            else:
                with rb.get(timeout=10) as m:
                    received.append((m.fields["i"], m.arrays["x"].tobytes()))

    t = threading.Thread(target=consume)
    t.start()
    ctl.put({"a": f"a{k}", "b": f"b{k}", "n": n, "mode": mode, "batch": batch})
    try:
        send(wa)
    finally:
        t.join(20)
        wa.close()
        rb.close()
        a.close()
        b.close()
    assert not t.is_alive()
    return received


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=120),
       chunk=st.integers(1, 40), batch=st.integers(1, 50), capacity=st.sampled_from([512, 1024, 4096]))
def test_raw_records_exactly_once_in_order(echo, sizes, chunk, batch, capacity):
    run_id, ctl = echo
    records = [bytes([i % 256]) * s + i.to_bytes(4, "little") for i, s in enumerate(sizes)]

    def send(w):
        for j in range(0, len(records), chunk):
            part = records[j : j + chunk]
            if len(part) == 1:
                w.put_bytes(part[0], timeout=10)
            else:
                w.put_many(part, timeout=10)

    assert _relay(run_id, ctl, capacity, "raw", batch, send, len(records)) == records


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(0, 200), min_size=1, max_size=40), capacity=st.sampled_from([1024, 4096]))
def test_messages_exactly_once_in_order(echo, lengths, capacity):
    run_id, ctl = echo
    rng = np.random.default_rng(len(lengths))
    arrays = [rng.integers(0, 1000, n).astype(np.int32) for n in lengths]

    def send(w):
        for i, x in enumerate(arrays):
            w.put({"i": i}, {"x": x}, timeout=10)

    got = _relay(run_id, ctl, capacity, "msg", 1, send, len(arrays))
    assert got == [(i, x.tobytes()) for i, x in enumerate(arrays)]
