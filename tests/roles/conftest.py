from pathlib import Path

import psutil
import pytest

TINY_MODEL = [
    "model.channels=8", "model.reduced_channels=4", "model.lstm_hidden=16", "model.head_hidden=[8]",
    "model.proj_hidden=16", "model.proj_out=16", "model.pred_hidden=8", "model.mlp_latent=16",
    "model.mlp_hidden=[16]", "model.support_size=20",
]


def speedy_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("speedy_r*")}


@pytest.fixture
def no_leftovers():
    """The test must leave no speedy_r* segment and no child process behind."""
    before = speedy_segments()
    yield
    assert speedy_segments() - before == set()
    children = psutil.Process().children(recursive=True)
    # multiprocessing's resource tracker belongs to this pytest process and ends with it
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
             and "resource_tracker" not in " ".join(c.cmdline())]
    assert not alive, f"processes left behind: {[c.cmdline()[:3] for c in alive]}"
