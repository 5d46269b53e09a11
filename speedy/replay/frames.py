"""Frames of several writers addressed by one id space: ref = writer index · 2⁴⁰ + the writer's frame id.

Each actor appends to its own single-writer `speedy.shm.FrameStore`; blocks in replay carry refs, and every reader
(reanalyzer, refresher, trainer) gathers frames by ref from all stores of the node without copies in between.
"""

from __future__ import annotations

import numpy as np

from speedy.shm.frames import FrameStore

STORE_SHIFT = 40
LOCAL_MASK = (1 << STORE_SHIFT) - 1


def frame_refs(store_index: int, local_ids: np.ndarray) -> np.ndarray:
    """Global refs (same shape, int64) for ids of store `store_index`."""
    return (np.int64(store_index) << STORE_SHIFT) | np.asarray(local_ids, dtype=np.int64)


class FrameSource:
    """Read frames by global ref from a list of stores (index = writer index)."""

    def __init__(self, stores: list[FrameStore]) -> None:
        if not stores:
            raise ValueError("FrameSource needs at least one frame store")
        self.stores = stores
        self.frame_shape = stores[0].frame_shape
        self.dtype = stores[0].dtype

    def published(self, refs: np.ndarray) -> bool:
        """True if every ref's frame has been written to its store (evicted ones count as written). On a cluster
        node the stores are replicas that fill asynchronously, so a sample can arrive before its frames."""
        flat = np.asarray(refs, dtype=np.int64).reshape(-1)
        if flat.size == 0:
            return True
        which = flat >> STORE_SHIFT
        for index in np.unique(which):
            if int((flat[which == index] & LOCAL_MASK).max()) >= self.stores[int(index)].next_id:
                return False
        return True

    def get(self, refs: np.ndarray) -> np.ndarray:
        """Gather frames for refs of any shape → (*refs.shape, *frame_shape)."""
        refs = np.asarray(refs, dtype=np.int64)
        if len(self.stores) == 1:
            return self.stores[0].get(refs & LOCAL_MASK)
        flat = refs.reshape(-1)
        out = np.empty((flat.size, *self.frame_shape), dtype=self.dtype)
        which = flat >> STORE_SHIFT
        for index in np.unique(which):
            if not 0 <= index < len(self.stores):
                raise KeyError(f"frame ref names store {index}, but only {len(self.stores)} stores are attached")
            rows = which == index
            out[rows] = self.stores[index].get(flat[rows] & LOCAL_MASK)
        return out.reshape(*refs.shape, *self.frame_shape)
