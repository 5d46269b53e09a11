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
from pathlib import Path

from speedy.roles.context import RoleContext, RoleSpec
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


def die_with_agent() -> None:
    """End this role process when its node agent (the spawning parent) dies, by any signal, SIGKILL included.

    Linux delivers SIGTERM on the parent's death (prctl PR_SET_PDEATHSIG); a watchdog thread also polls the
    parent pid every `AGENT_POLL_S` seconds (other platforms, or a parent that died before the prctl), and
    exits the process at once. The role holds no shared state that dying mid-step could corrupt: the agent
    owns the segments, and a ring record or weight copy is only published once complete.

    A SIGTERM while the agent lives is the agent's to act on, as Ctrl-C is: a signal to the whole process group
    (torchrun stopping its worker, `kill -TERM -<pgid>`, a batch system) reaches the agent too, which raises the
    stop flag so that the trainer writes its checkpoint and replay its snapshot; dying on it would lose both.
    (The agent's own last resort for a role that ignores the flag is SIGKILL.)
    """
    parent = mp.parent_process()
    agent_pid = parent.pid if parent is not None else os.getppid()

    def on_term(signum, frame):  # noqa: ANN001, ARG001
        if os.getppid() != agent_pid:
            os._exit(3)

    signal.signal(signal.SIGTERM, on_term)
    signal_on_parent_death(signal.SIGTERM)
    if os.getppid() != agent_pid:
        os._exit(3)  # the agent died before we got here

    def watch() -> None:
        while True:
            time.sleep(AGENT_POLL_S)
            if os.getppid() != agent_pid:
                os._exit(3)

    threading.Thread(target=watch, name="agent-watchdog", daemon=True).start()


def role_main(spec: RoleSpec) -> None:
    """Run one role until the board's stop flag (or its own end); exit code 1 with a logged traceback on error.
    The process ends within seconds if its node agent dies (`die_with_agent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node agent's: it raises the stop flag
    die_with_agent()
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


