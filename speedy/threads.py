"""Core budget of one process: set torch, numba and BLAS thread counts to this process's share, and flush
denormal floats to zero.

Oversubscription (every process of a many-process run using every core) is the usual way such a
system runs slower than one process on a small box, so every role calls `limit_threads` first.

Denormals: weight decay drives unused weights and Adam moments toward zero, through the denormal range (below
1.2e-38), where x86 CPUs compute 10-100× slower. A CartPole model after 5,000 steps held 15.6k denormal weights and
18.4k denormal optimizer moments; its training step took 252 ms against 26 ms fresh, so a run's training rate fell
7× over the run (docs/benchmarks.md). Flushing them (FTZ/DAZ) changes no value above 1.2e-38. The flag is per
thread and threads inherit it when they are created, so it is set here, before the process starts any.
"""

from __future__ import annotations

import contextlib
import os

# Not NUMBA_NUM_THREADS: numba re-reads it when it compiles, and a value other than the one its thread pool was
# started with is an error; numba.set_num_threads below limits this process instead.
_BLAS_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads(num_threads: int) -> None:
    """Restrict this process to `num_threads` compute threads (>= 1) in torch, numba and BLAS.

    Environment variables are set too so that child processes started later inherit the limit.
    """
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    flush_denormals()
    for var in _BLAS_VARS:
        os.environ[var] = str(num_threads)
    # numba first: its set_num_threads starts numba's OpenMP pool, which resets the OpenMP thread count of this
    # thread; torch's limit set before it was lost once torch had run a parallel op (every conv then waited on
    # threads it no longer counted: 30 ms instead of 0.1 ms per small conv on a busy 2-core host).
    try:
        import numba

        numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
    import torch

    torch.set_num_threads(num_threads)
    # Inter-op threads are only settable before the first parallel op; the intra-op limit is what matters.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def flush_denormals() -> bool:
    """Treat denormal floats as zero in this thread and the threads it starts later (False where the CPU cannot)."""
    import torch

    return bool(torch.set_flush_denormal(True))
