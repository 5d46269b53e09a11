"""Named shared-memory segments with a per-run naming scheme, owner tracking and cleanup.

Every file lives in ``/dev/shm`` as ``speedy_<run_id>_<name>``. A segment starts with a
4096-byte header (magic, creator pid and process start time, data size, msgpack metadata),
followed by the data region, so anyone can tell whose a segment is and whether its owner is
still alive.

Why not ``multiprocessing.shared_memory``: on Python 3.11 its resource tracker unlinks (and
warns about) segments that an *attaching* process "leaked" when it exits, and ``track=False``
only exists from 3.13 on. We open the ``/dev/shm`` files ourselves with ``os.open`` + ``mmap``,
which never involves the resource tracker. Creation is atomic: the file is written under a
temporary name and hard-linked to its final name, so nobody ever attaches a half-initialised
segment.

Lifecycle: a process unlinks the segments (and doorbell FIFOs) it created on normal exit
(``atexit``) and on SIGINT/SIGTERM (handlers that clean up and then chain to the previous
handler). A process killed by SIGKILL cannot clean up; ``cleanup_stale`` removes files whose
creator is dead (``run.py --cleanup`` calls it, and so can the next start).
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import re
import signal
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import psutil

SHM_DIR = Path("/dev/shm")
PREFIX = "speedy_"
HEADER_BYTES = 4096
_MAGIC = 0x31484D5359445053  # b"SPDYSMH1" little-endian
_HEADER = struct.Struct("<QqdqI")  # magic, creator pid, creator start time (s), data size, meta length
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


class SegmentError(RuntimeError):
    """A segment is missing, malformed or cannot be created."""


@dataclass(frozen=True)
class SegmentInfo:
    """Header of a segment file as read by `read_info`."""

    path: Path
    creator_pid: int
    creator_start_time: float  # seconds since the epoch, as psutil reports it
    data_size: int  # bytes after the header


def segment_path(run_id: str, name: str) -> Path:
    """Path of segment `name` of run `run_id`: /dev/shm/speedy_<run_id>_<name>.

    `run_id` may hold letters, digits and '-'; `name` letters, digits, '.' and '-'.
    """
    if not _RUN_RE.match(run_id):
        raise ValueError(f"run_id {run_id!r} must match {_RUN_RE.pattern} (no '_' or '/')")
    if not _NAME_RE.match(name):
        raise ValueError(f"segment name {name!r} must match {_NAME_RE.pattern}")
    full = f"{PREFIX}{run_id}_{name}"
    if len(full) > 240:
        raise ValueError(f"segment name too long ({len(full)} characters): {full!r}")
    return SHM_DIR / full


def process_start_time(pid: int) -> float:
    """Start time of process `pid` in seconds since the epoch (0.0 if it does not exist)."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def pid_alive(pid: int, start_time: float = 0.0) -> bool:
    """True if process `pid` exists, is not a zombie and (if `start_time` > 0) is the same
    process that started at `start_time` (guards against pid reuse)."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not (start_time > 0 and abs(proc.create_time() - start_time) > 0.05)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


# ---------------------------------------------------------------------------------------------
# Registry of files this process created, unlinked at exit and on SIGINT/SIGTERM.

_registry_lock = threading.Lock()
_created: dict[str, int] = {}  # path -> pid of the creating process (a forked child must not unlink)
_hooks_installed = False
_previous_handlers: dict[int, Any] = {}


def register_owned(path: Path) -> None:
    """Remember that this process created `path`; it is unlinked when this process exits."""
    with _registry_lock:
        _created[str(path)] = os.getpid()
    _install_hooks()


def forget_owned(path: Path) -> None:
    """Stop tracking `path` (after it was unlinked explicitly)."""
    with _registry_lock:
        _created.pop(str(path), None)


def unlink_owned() -> list[str]:
    """Unlink every file this process created and still owns; returns the paths removed."""
    removed = []
    with _registry_lock:
        mine = [p for p, pid in _created.items() if pid == os.getpid()]
        for p in mine:
            _created.pop(p, None)
    for p in mine:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
            removed.append(p)
    return removed


def _on_signal(signum: int, frame: Any) -> None:
    unlink_owned()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL: die by the same signal, as if we had never installed a handler
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(unlink_owned)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still covers exit
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous is None:  # set from C code; we cannot chain to it, so leave it alone
            continue
        if previous == signal.SIG_IGN:  # the process runs on after this signal (e.g. SIGINT in a background job),
            continue  # and so do the peers attached to its segments: nothing to clean up
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_signal)


# ---------------------------------------------------------------------------------------------


def _map(fd: int, size: int, populate: bool) -> mmap.mmap:
    """Shared read-write mapping of `size` bytes of `fd`, pre-faulted if `populate` (Linux)."""
    flags = mmap.MAP_SHARED
    if populate:
        flags |= getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)


class Segment:
    """A mapped shared-memory segment: a header plus `size` bytes of data.

    Attributes:
        path: the /dev/shm file.
        size: data bytes (excluding the header).
        meta: the msgpack metadata stored at creation (dict with str keys).
        buf: writable memoryview of the data region, `size` bytes.
        owner: True in the process that created it (it unlinks the file on close/exit).
    """

    def __init__(self, path: Path, mm: mmap.mmap, size: int, meta: dict, owner: bool) -> None:
        self.path = path
        self.size = size
        self.meta = meta
        self.owner = owner
        self._mm = mm
        self.buf = memoryview(mm)[HEADER_BYTES : HEADER_BYTES + size]

    @classmethod
    def create(cls, run_id: str, name: str, size: int, meta: dict | None = None, populate: bool = False) -> Segment:
        """Create segment `name` of `run_id` with `size` zeroed data bytes and metadata `meta`.

        `populate`: allocate and map every page now (MAP_POPULATE), so that the hot path never
        takes a first-touch page fault (rings; not worth it for huge, sparsely used stores).

        Raises FileExistsError if it already exists (call `cleanup_stale` first after a crash).
        """
        if size <= 0:
            raise ValueError(f"segment size must be > 0 bytes, got {size}")
        path = segment_path(run_id, name)
        meta = dict(meta or {})
        packed = msgpack.packb(meta, use_bin_type=True)
        if _HEADER.size + len(packed) > HEADER_BYTES:
            raise ValueError(f"segment metadata too large: {len(packed)} bytes")
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, HEADER_BYTES + size)
            mm = _map(fd, HEADER_BYTES + size, populate)
        finally:
            os.close(fd)
        me = os.getpid()
        _HEADER.pack_into(mm, 0, _MAGIC, me, process_start_time(me), size, len(packed))
        mm[_HEADER.size : _HEADER.size + len(packed)] = packed
        try:
            os.link(tmp, path)  # atomic publish under the final name; fails if it exists
        except FileExistsError:
            mm.close()
            raise
        finally:
            os.unlink(tmp)
        register_owned(path)
        return cls(path, mm, size, meta, owner=True)

    @classmethod
    def attach(cls, run_id: str, name: str, populate: bool = False) -> Segment:
        """Map the existing segment `name` of `run_id` (never unlinks it); `populate` as in `create`."""
        path = segment_path(run_id, name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise SegmentError(f"no shared-memory segment {path} (not created yet, or removed)") from None
        try:
            total = os.fstat(fd).st_size
            if total < HEADER_BYTES:
                raise SegmentError(f"segment {path} is truncated: {total} bytes")
            mm = _map(fd, total, populate)
        finally:
            os.close(fd)
        magic, _pid, _t, size, meta_len = _HEADER.unpack_from(mm, 0)
        if magic != _MAGIC or HEADER_BYTES + size > total or _HEADER.size + meta_len > HEADER_BYTES:
            mm.close()
            raise SegmentError(f"segment {path} has a malformed header")
        meta = msgpack.unpackb(mm[_HEADER.size : _HEADER.size + meta_len], raw=False)
        return cls(path, mm, size, meta, owner=False)

    def ndarray(self, dtype: np.dtype | str, offset: int, shape: tuple[int, ...] | int) -> np.ndarray:
        """Writable ndarray view of the data region at byte `offset` (relative to the data start)."""
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        end = offset + count * dtype.itemsize
        if offset < 0 or end > self.size:
            raise ValueError(f"view [{offset}, {end}) outside segment {self.path.name} of {self.size} bytes")
        return np.frombuffer(self._mm, dtype, count, HEADER_BYTES + offset).reshape(shape)

    def unlink(self) -> None:
        """Remove the file name (mappings stay valid until closed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        forget_owned(self.path)

    def close(self) -> None:
        """Unmap (and unlink if this process created it). Views still alive keep the mapping
        until they are garbage collected."""
        if self.owner:
            self.unlink()
            bell = Path(f"{self.path}.bell")  # a mux's shared doorbell
            if str(bell) in _created:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(bell)
                forget_owned(bell)
        self.buf.release()
        with contextlib.suppress(BufferError):
            self._mm.close()

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_info(path: Path) -> SegmentInfo | None:
    """Header of segment file `path`, or None if it is not a well-formed segment."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER.size)
    except OSError:
        return None
    if len(raw) < _HEADER.size:
        return None
    magic, pid, start, size, _ = _HEADER.unpack(raw)
    if magic != _MAGIC:
        return None
    return SegmentInfo(path=path, creator_pid=pid, creator_start_time=start, data_size=size)


def list_segments(run_id: str | None = None) -> Iterator[Path]:
    """Every speedy file in /dev/shm (of `run_id` if given)."""
    pattern = f"{PREFIX}{run_id}_*" if run_id else f"{PREFIX}*"
    yield from sorted(SHM_DIR.glob(pattern))


def cleanup_stale(run_id: str | None = None) -> list[str]:
    """Remove speedy files in /dev/shm whose creator process is dead; returns the removed paths.

    Segments carry their creator's pid and start time; doorbell FIFOs (``<segment>.bell*``) go
    with their segment; temporary files (``.tmp<pid>``) go when that pid is dead.
    """
    removed = []
    paths = list(list_segments(run_id))
    for path in paths:
        if _is_stale(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(str(path))
    return removed


def _is_stale(path: Path) -> bool:
    name = path.name
    tmp = re.search(r"\.tmp(\d+)$", name)
    if tmp:
        return not pid_alive(int(tmp.group(1)))
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISFIFO(mode):
        owner = path.with_name(name.split(".bell")[0])
        return not owner.exists() or _is_stale(owner)
    info = read_info(path)
    if info is None:
        return False  # not ours to judge
    return not pid_alive(info.creator_pid, info.creator_start_time)
