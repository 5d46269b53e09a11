"""Doorbells: wake a sleeping peer in another process, blocking or from an asyncio loop.

A doorbell is a named FIFO next to its segment (``/dev/shm/speedy_<run>_<name>.bell-r``).
We use a named FIFO rather than an eventfd because role processes do not inherit the agent's
descriptors (they come from a fork server, not a fork of the agent: torch and fork do not mix)
and attach to rings by name: a FIFO needs no file-descriptor passing, yet is
an ordinary pollable fd that asyncio's ``loop.add_reader`` (uvloop included) and ``select.poll``
can wait on. Both sides open it O_RDWR | O_NONBLOCK (Linux allows this for FIFOs), so opening
never blocks, writing never fails with ENXIO, and the reader never sees EOF.

Ringing writes one byte; a full pipe (EAGAIN) means the bell is already ringing, which is fine.
The sleeper drains all bytes after waking. Whether to ring at all is decided by a "sleeping"
flag in shared memory that the owner of the bell sets before it waits (see ``ring.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from pathlib import Path

from speedy.shm.segment import register_owned

_fence_lock = threading.Lock()


def fence() -> None:
    """Full memory barrier (StoreLoad included) as seen from Python.

    CPython has no atomics API; acquiring and releasing an uncontended lock runs a locked
    read-modify-write instruction in the C library (x86-64: ``lock cmpxchg``/``lock xadd``),
    which orders every earlier store before every later load. Cost ~0.1 us. Used by the
    "store my flag, then load the peer's counter" handshake so a wake-up is never lost.
    """
    _fence_lock.acquire()
    _fence_lock.release()


class Doorbell:
    """One named FIFO used as a wake-up signal between processes.

    Use `Doorbell.create(path)` in the process that owns the segment (it is unlinked at exit)
    and `Doorbell(path)` everywhere else.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(f"doorbell FIFO {self.path} does not exist") from None
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    @classmethod
    def create(cls, path: Path | str) -> Doorbell:
        """Make the FIFO (registered for unlink at exit) and open it."""
        os.mkfifo(path, 0o600)
        register_owned(Path(path))
        return cls(path)

    def ring(self) -> None:
        """Wake the sleeper (idempotent while it has not drained yet)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self.fd, b"\x01")

    def drain(self) -> None:
        """Consume all pending rings."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a ring; True if rung. Does not drain."""
        return bool(self._poll.poll(max(0.0, timeout) * 1000.0))

    async def wait_async(self, timeout: float) -> bool:
        """Like `wait`, but suspends the running asyncio task instead of blocking the loop."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def _ready() -> None:
            if not fut.done():
                fut.set_result(True)

        loop.add_reader(self.fd, _ready)
        try:
            # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for returns the result when the task is
            # cancelled just as the bell rings, swallowing the cancel (a trainer's batch prefetch then outlived its
            # run and the process never exited)
            async with asyncio.timeout(max(0.0, timeout)):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        """Close this process's fd (the FIFO file itself is unlinked by its creator)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                self._poll.unregister(self.fd)
            os.close(self.fd)
            self.fd = -1
