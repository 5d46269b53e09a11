from types import SimpleNamespace

import pytest

from speedy.config import build_config
from speedy.replay import BlockLayout, ReplayBuffer
from speedy.replay.buffer import replay_memory_bytes
from speedy.roles import launch


def test_replay_memory_estimate_matches_what_the_buffer_allocates():
    layout = BlockLayout(block_length=200, unroll_steps=5, td_steps=5, frame_stack=4, num_actions=18)
    replay = ReplayBuffer(layout, 20_000, alpha=0.6, priority_eps=1e-6)
    allocated = sum(ring.data.nbytes for ring in replay.rings.values()) + replay.tree.nodes.nbytes + sum(
        getattr(replay, name).nbytes for name in ("starts", "stored", "lengths", "valid_steps", "truncated",
                                                  "collected_at", "generation", "owner", "priorities", "held"))
    assert 0.9 * allocated <= replay_memory_bytes(layout, 20_000) <= 1.3 * allocated


def test_preflight_refuses_frames_plus_replay_beyond_memory(monkeypatch):
    GiB = 2**30
    monkeypatch.setattr(launch.shutil, "disk_usage", lambda path: SimpleNamespace(free=8 * GiB))
    monkeypatch.setattr(launch.psutil, "virtual_memory", lambda: SimpleNamespace(available=10 * GiB))
    config = build_config("atari100k")
    launch.check_memory(4 * GiB, 3 * GiB, config)  # 7 GiB ≤ 0.8 · 10 GiB
    with pytest.raises(MemoryError, match="replay"):
        launch.check_memory(4 * GiB, 5 * GiB, config)
    with pytest.raises(MemoryError, match="shared memory"):
        launch.check_memory(9 * GiB, 0, config)
