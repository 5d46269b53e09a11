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
    # multiprocessing's resource tracker and the roles' fork server (of run_single_box called in this process)
    # belong to this pytest process and end with it
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
             and not any(name in " ".join(c.cmdline()) for name in ("resource_tracker", "forkserver"))]
    assert not alive, f"processes left behind: {[c.cmdline()[:3] for c in alive]}"


def agent_rows(run_dir: Path) -> dict | None:
    """The newest per-process board snapshot the node agent logged (metrics/agent.jsonl), None before the first."""
    from speedy.metrics import read_metrics

    path = run_dir / "metrics" / "agent.jsonl"
    if not path.exists():
        return None
    records = [r for r in read_metrics(path) if "roles" in r]  # the first record is the agent's start event
    return records[-1]["roles"] if records else None


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201 - returns what the predicate returned
    """Poll `predicate` every 0.25 s until it returns something truthy (returned); AssertionError after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
