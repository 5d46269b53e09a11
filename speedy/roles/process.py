"""Entry point of a role process: thread budget, uvloop, the role's coroutine, and a traceback log on failure."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from speedy.roles.context import RoleContext, RoleSpec
from speedy.shm.segment import pid_alive, process_start_time
from speedy.threads import limit_threads


def _role_coroutine(ctx: RoleContext):  # noqa: ANN202 - returns the role's coroutine
    role = ctx.spec.role
    if role == "actor":
        from speedy.roles.actor import run_actor

        return run_actor(ctx)
    if role == "replay":
        from speedy.roles.replay import run_replay

        return run_replay(ctx)
    if role == "reanalyzer":
        from speedy.roles.reanalyzer import run_reanalyzer

        return run_reanalyzer(ctx)
    if role == "refresher":
        from speedy.roles.refresher import run_refresher

        return run_refresher(ctx)
    if role == "trainer":
        from speedy.roles.trainer import run_trainer

        return run_trainer(ctx)
    if role == "evaluator":
        from speedy.roles.evaluator import run_evaluator

        return run_evaluator(ctx)
    raise ValueError(f"unknown role {role!r}")


_PR_SET_PDEATHSIG = 1
AGENT_POLL_S = 1.0


def signal_on_parent_death(signum: int = signal.SIGTERM) -> None:
    """Linux: have the kernel send `signum` to this process when the process that spawned it dies (prctl
    PR_SET_PDEATHSIG); elsewhere nothing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


# What every role imports: loaded once into the fork server (see `role_context`), not again in each role process.
PRELOAD = ["numpy", "torch", "numba", "uvloop", "speedy.roles.actor", "speedy.roles.replay", "speedy.roles.reanalyzer",
           "speedy.roles.refresher", "speedy.roles.trainer", "speedy.roles.evaluator"]


def role_context() -> mp.context.BaseContext:
    """The multiprocessing context role processes start from: a fork server that has imported torch, numba and the
    role modules once (`PRELOAD`), so a role starts (and restarts) in a fraction of a second instead of re-importing
    them (about 2 CPU-seconds each; a node starts 5-10 roles on a few cores). The server is a clean process started
    for this agent: nothing of the agent's state, threads or CUDA context is forked. Linux (and other platforms
    with fork); elsewhere plain spawn."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


# Signals a whole process group gets (torchrun stopping its worker, `kill -TERM -<pgid>`, a pause) that would kill
# the fork server, which then could no longer report its roles' exits to the agent: held while it starts.
GROUP_SIGNALS = {signal.SIGTERM, signal.SIGUSR1}


@contextlib.contextmanager
def group_signals_held() -> Iterator[None]:
    """Block `GROUP_SIGNALS` in this thread while a role process starts; one that arrives meanwhile is delivered
    after, not lost. A fork server started here inherits the blocked mask and so never acts on them; each role
    unblocks them (`role_main`)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    # the fork server starts multiprocessing's resource tracker first, and that start unblocks SIGTERM afterwards
    resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def die_with_agent() -> None:
    """End this role process when its node agent (the process that started it) dies, by any signal, SIGKILL
    included.

    Roles are forked by the agent's fork server, which ends when the agent does: Linux then delivers SIGTERM to the
    role (prctl PR_SET_PDEATHSIG on its parent, the server), and a watchdog thread also checks the agent every
    `AGENT_POLL_S` seconds (other platforms, or an agent that died before the prctl) and exits the process at once.
    A role whose fork server died while the agent lives ends too: only the server reports its exit to the agent.
    The role holds no shared state that dying mid-step could corrupt: the agent owns the segments, and a ring
    record or weight copy is only published once complete.

    A SIGTERM while the agent lives is the agent's to act on, as Ctrl-C is: a signal to the whole process group
    (torchrun stopping its worker, `kill -TERM -<pgid>`, a batch system) reaches the agent too, which raises the
    stop flag so that the trainer writes its checkpoint and replay its snapshot; dying on it would lose both.
    (The agent's own last resort for a role that ignores the flag is SIGKILL.)
    """
    parent = mp.parent_process()
    agent_pid = parent.pid if parent is not None else os.getppid()
    server_pid = os.getppid()  # the fork server (under spawn: the agent itself)
    started = process_start_time(agent_pid)  # guards against the agent's pid being reused
    if not started:
        os._exit(3)  # the agent died before we got here

    def orphaned() -> bool:
        # the fork server gone while the agent lives (killed on its own, e.g. by the OOM killer): the agent can no
        # longer tell whether this role runs, and would start another in its place, so this one ends
        return os.getppid() != server_pid or not pid_alive(agent_pid, started)

    def on_term(signum, frame):  # noqa: ANN001, ARG001
        if orphaned():
            os._exit(3)

    signal.signal(signal.SIGTERM, on_term)
    signal_on_parent_death(signal.SIGTERM)
    if orphaned():
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(AGENT_POLL_S)
            if orphaned():
                os._exit(3)

    threading.Thread(target=watch, name="agent-watchdog", daemon=True).start()


def unnamed_process_locks() -> None:
    """Make this role's default multiprocessing start method "fork", so that locks made from the default context
    are unnamed semaphores, gone with the processes that hold them.

    A role inherits "forkserver" from the fork server, and numba's thread-pool start (`limit_threads`) takes an
    RLock from the default context: under "forkserver" a named POSIX semaphore (/dev/shm/sem.mp-*) that only
    multiprocessing's resource tracker unlinks if the role dies. A node SIGKILLed as a whole (a dead machine, a
    test's `kill_node`) took the tracker with it and left one per role behind. A role starts no processes itself,
    so the start method changes nothing else."""
    if "fork" in mp.get_all_start_methods():
        mp.set_start_method("fork", force=True)


def role_main(spec: RoleSpec) -> None:
    """Run one role until the board's stop flag (or its own end); exit code 1 with a logged traceback on error.
    The process ends within seconds if its node agent dies (`die_with_agent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node agent's: it raises the stop flag
    die_with_agent()
    if hasattr(signal, "pthread_sigmask"):  # held by the fork server (group_signals_held)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
    unnamed_process_locks()
    limit_threads(spec.threads)
    ctx = None
    try:
        import uvloop

        ctx = RoleContext(spec)
        ctx.row.set("pid", os.getpid())
        ctx.write_stats({"event": "start"})
        uvloop.run(_role_coroutine(ctx))
        ctx.write_stats({"event": "stop"})
    except BaseException:  # noqa: BLE001 - any failure is logged for the agent and ends the process
        text = traceback.format_exc()
        log_dir = Path(spec.run_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with (log_dir / f"{spec.name}.log").open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        print(f"[{spec.name}] failed:\n{text}", file=sys.stderr, flush=True)
        if ctx is not None:
            ctx.close()
        sys.exit(1)
    ctx.close()


