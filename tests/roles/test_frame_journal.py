"""The frame journal: each frame written once, a manifest that only ever describes whole files, gaps restart."""

from __future__ import annotations

import json

import numpy as np

from speedy.roles.resume import JOURNAL_DIR, JOURNAL_MANIFEST, FrameJournal, read_journal
from speedy.shm.frames import FrameStore


def frames(first: int, n: int) -> np.ndarray:
    return (np.arange(first, first + n, dtype=np.int64)[:, None] * np.ones((1, 3), np.int64)).astype(np.uint8)


def test_appends_are_incremental_and_survive_a_torn_write(tmp_path, no_leftovers):
    store = FrameStore.create("testjournal", "frames0", (3,), np.uint8, 16)
    try:
        journal = FrameJournal(tmp_path, [store])
        store.append(frames(0, 10))
        journal.append(serial=5)
        path = tmp_path / JOURNAL_DIR / "store0.bin"
        assert path.stat().st_size == 30
        store.append(frames(10, 4))
        journal.append(serial=6)
        assert path.stat().st_size == 42  # only the 4 new frames were written
        serial, [(first, got)] = read_journal(tmp_path)
        assert serial == 6 and first == 0
        np.testing.assert_array_equal(got, frames(0, 14))
        _, [(first, got)] = read_journal(tmp_path, capacity=lambda stores: 5)  # the newest 5 for a smaller store
        assert first == 9
        np.testing.assert_array_equal(got, frames(9, 5))
        with open(path, "ab") as handle:  # a crash mid-append: bytes past the manifest's count are ignored
            handle.write(b"\xff" * 7)
        assert read_journal(tmp_path)[0] == 6 and len(read_journal(tmp_path)[1][0][1]) == 14
        manifest = json.loads((tmp_path / JOURNAL_DIR / JOURNAL_MANIFEST).read_text())
        manifest["stores"][0]["count"] = 99  # a manifest that promises more than the file holds is refused
        (tmp_path / JOURNAL_DIR / JOURNAL_MANIFEST).write_text(json.dumps(manifest))
        assert read_journal(tmp_path) is None
    finally:
        store.close()


def test_frames_evicted_before_they_were_journaled_restart_the_file(tmp_path, no_leftovers):
    store = FrameStore.create("testjournal", "frames1", (3,), np.uint8, 8)
    try:
        journal = FrameJournal(tmp_path, [store])
        store.append(frames(0, 4))
        journal.append(serial=1)
        for first in (4, 10, 16):  # 18 more frames: ids 4–13 are gone before the next append
            store.append(frames(first, 6))
        journal.append(serial=2)
        serial, [(first, got)] = read_journal(tmp_path)
        assert serial == 2 and first == store.oldest_id() == 14
        np.testing.assert_array_equal(got, frames(14, 8))
    finally:
        store.close()
