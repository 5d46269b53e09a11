"""Fixtures for speedy.shm tests: a unique run id per test and a check that nothing leaks."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os

import pytest

from speedy.shm import list_segments, unlink_owned

_counter = itertools.count()


@pytest.fixture
def run_id():
    """A fresh run id; after the test no /dev/shm/speedy_<run_id>_* file may remain."""
    rid = f"t{os.getpid()}-{next(_counter)}"
    yield rid
    left = list(list_segments(rid))
    unlink_owned()
    assert not left, f"segments left behind: {left}"


@pytest.fixture
def ctx():
    """Spawn context (torch and fork do not mix)."""
    return mp.get_context("spawn")


def start(ctx, target, *args):
    """Start a daemon child process running target(*args)."""
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def stop(p) -> None:
    """Join a child, killing it if it does not exit within 5 s."""
    p.join(5)
    if p.is_alive():
        p.kill()
        p.join(5)
