"""FrameSource.published: whether every frame a sample refers to is already in this node's stores (a cluster node's
replica stores fill after the samples that need them can arrive)."""

from __future__ import annotations

import numpy as np

from speedy.replay.frames import FrameSource, frame_refs
from speedy.shm.frames import FrameStore


def test_published_follows_each_store_s_next_id():
    stores = [FrameStore.create("testpublished", f"frames{i}", (2,), np.uint8, 16) for i in range(2)]
    try:
        source = FrameSource(stores)
        refs = np.concatenate([frame_refs(0, np.array([0, 1])), frame_refs(1, np.array([2]))])
        assert not source.published(refs)
        stores[0].append(np.zeros((2, 2), np.uint8))
        assert source.published(refs[:2]) and not source.published(refs)
        stores[1].append(np.zeros((3, 2), np.uint8))
        assert source.published(refs) and source.published(refs.reshape(1, 3))
        assert source.published(np.zeros((0,), np.int64))
    finally:
        for store in stores:
            store.close()
