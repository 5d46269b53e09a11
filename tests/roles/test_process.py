"""Role processes start from the fork server (speedy/roles/process.py) and leave nothing in /dev/shm that only a
live resource tracker would remove."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from speedy.roles.process import role_context, unnamed_process_locks
from speedy.threads import limit_threads


def named_semaphores() -> set[str]:
    """multiprocessing's named POSIX semaphores in /dev/shm (a mapping of one shows glibc's temporary name, so
    /proc/self/maps cannot tell)."""
    return {p.name for p in Path("/dev/shm").glob("sem.mp-*")}


def start_threads_as_a_role_does(result: mp.connection.Connection) -> None:  # type: ignore[name-defined]
    before = named_semaphores()
    unnamed_process_locks()
    limit_threads(1)  # starts numba's thread pool, which takes a process lock from the default context
    result.send(sorted(named_semaphores() - before))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="POSIX semaphores live in /dev/shm on Linux")
@pytest.mark.parametrize("agent_start_method", ["fork", "forkserver"])
def test_a_role_holds_no_named_semaphore_whatever_the_agents_start_method(agent_start_method):
    """A role forked by the fork server defaults to "forkserver" whatever its agent's default is (both failed
    without the fix): numba's lock was then a named semaphore, left in /dev/shm when a whole node was SIGKILLed,
    tracker included."""
    before = mp.get_start_method(allow_none=True)
    mp.set_start_method(agent_start_method, force=True)
    receive, send = mp.Pipe(duplex=False)
    role = role_context().Process(target=start_threads_as_a_role_does, args=(send,))
    try:
        role.start()
        named = receive.recv() if receive.poll(60) else None
        role.join(30)
    finally:
        mp.set_start_method(before, force=True)
        if role.is_alive():  # never leave it behind, even when the test fails
            role.kill()
            role.join()
    assert role.exitcode == 0
    assert named == []
