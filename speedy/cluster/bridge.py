"""The only module that talks `torch.distributed.rpc`: moves ring records from this node to a ring on another node.

What crosses the network is the project's codec records (msgpack header + raw arrays) exactly as they lie in the
rings, packed into one uint8 tensor plus an int64 tensor of record lengths, and a channel name (a str): never a
pickled object of ours. The receiving agent writes the records, unchanged, into the local ring registered under
that channel, so role code on either side reads and writes local rings and never learns where its peer lives.
Swapping RPC for another transport means rewriting this module only.

Delivery and failure (../shared/DESIGN.md §2, "Across nodes"):
- `Forwarder` takes up to `batch` records from a local ring (copies: the slots are freed at once) and sends them
  with one call that has a deadline (`timeout_s`). The receiver writes as many as its ring has room for within
  `accept_s` and returns that count; the forwarder keeps the rest and retries, so a full ring on the far side
  pushes back on this side instead of losing records.
- A call that fails (the peer died: ≈ 0.3 s; hung: at the deadline) marks the peer lost; records of that call
  are dropped (work handed to a node is a lease: the sender's side re-issues it, e.g. replay samples again) and
  `on_lost(peer, error)` is told once. A lost peer stays lost (RPC cannot re-admit a member).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from speedy.shm.ring import RingError, RingReader, RingWriter

_INBOUND: dict[str, RingWriter] = {}
_INBOUND_BYTES: dict[str, int] = {}  # channel → bytes of the records delivered into it on this node
_LOCK = threading.Lock()


class BridgeError(RuntimeError):
    """A delivery that cannot be made: the channel is unknown on the receiving node."""


def register_inbound(channel: str, writer: RingWriter) -> None:
    """Deliveries to `channel` on this node go into `writer`'s ring (one registration per channel)."""
    with _LOCK:
        if channel in _INBOUND:
            raise BridgeError(f"channel {channel!r} is already registered on this node")
        _INBOUND[channel] = writer


def unregister_inbound(channel: str) -> None:
    with _LOCK:
        _INBOUND.pop(channel, None)


def pack(records: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Records → (uint8 tensor of all their bytes, int64 tensor of their lengths)."""
    lengths = torch.tensor([len(r) for r in records], dtype=torch.int64)
    joined = bytearray(b"".join(records))
    data = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
    return data, lengths


def unpack(data: torch.Tensor, lengths: torch.Tensor) -> list[memoryview]:
    """Inverse of `pack` (zero-copy views into `data`); BridgeError if the lengths do not add up."""
    sizes = lengths.tolist()
    raw = data.numpy().data
    if sum(sizes) != len(raw) or any(n < 0 for n in sizes):
        raise BridgeError(f"a delivery of {len(raw)} bytes does not split into records of {sizes[:8]}...")
    out, at = [], 0
    for n in sizes:
        out.append(raw[at : at + n])
        at += n
    return out


def deliver(channel: str, data: torch.Tensor, lengths: torch.Tensor, accept_s: float) -> int:
    """RPC target: write the records into the local ring of `channel`, in order, as many as fit within `accept_s`
    seconds; returns how many were written (the caller re-sends the rest), or −1 if this node has no such channel
    (yet). A local consumer that closed its end or
    died (the agent restarts it) takes nothing for now: that is this node's business, not a network failure."""
    writer = _INBOUND.get(channel)
    if writer is None:
        return -1  # not registered (yet): the node is still starting; the sender retries, then gives up
    records = unpack(data, lengths)
    deadline = time.monotonic() + accept_s
    taken = len(records)
    for i, record in enumerate(records):
        try:
            writer.put_bytes(record, timeout=max(0.0, deadline - time.monotonic()))
        except RingError:  # full, or the local consumer is stopping or restarting: the sender tries again later
            taken = i
            break
    with _LOCK:
        _INBOUND_BYTES[channel] = _INBOUND_BYTES.get(channel, 0) + sum(len(r) for r in records[:taken])
    return taken


def inbound_bytes() -> dict[str, int]:
    """Channel → bytes delivered into this node's rings so far."""
    with _LOCK:
        return dict(_INBOUND_BYTES)


@dataclass
class ForwarderStats:
    """Counters of one forwarder (records and bytes delivered, calls, retries of records the peer had no room for)."""

    records: int = 0
    bytes: int = 0
    calls: int = 0
    deferred: int = 0
    dropped: int = 0


class Forwarder:
    """Moves records from a local ring reader to `channel` on node `peer`, in a thread of its own."""

    def __init__(self, reader: RingReader, peer: str, channel: str, timeout_s: float = 30.0, batch: int = 64,
                 accept_s: float = 0.5, on_lost: Callable[[str, Exception], None] | None = None,
                 follow_restarts: bool = False) -> None:
        """`follow_restarts`: the local producer is a role the node agent restarts after a crash, so its closing
        the ring is not the end of the stream: keep forwarding what its successor writes until `stop()`."""
        self.reader, self.peer, self.channel = reader, peer, channel
        self.follow_restarts = follow_restarts
        self.timeout_s, self.batch, self.accept_s = timeout_s, batch, min(accept_s, timeout_s / 4)
        self.on_lost = on_lost
        self.stats = ForwarderStats()
        self.lost: Exception | None = None
        self.finished = False  # True once the local ring's writer closed and everything it wrote was delivered
        self._unknown_since = 0.0  # when the peer first answered that it has no such channel (still starting)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"forward-{channel}->{peer}", daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current call (records still unsent in the local ring stay there)."""
        self._stop.set()
        self._thread.join(timeout)

    def send_now(self, records: list[bytes]) -> list[bytes]:
        """One call: deliver `records`; returns those the peer had no room for. Raises on RPC failure, and
        BridgeError once the peer has gone `timeout_s` without registering the channel."""
        from torch.distributed import rpc

        data, lengths = pack(records)
        taken = rpc.rpc_sync(self.peer, deliver, args=(self.channel, data, lengths, self.accept_s),
                             timeout=self.timeout_s)
        self.stats.calls += 1
        if taken < 0:
            self._unknown_since = self._unknown_since or time.monotonic()
            if time.monotonic() - self._unknown_since > self.timeout_s:
                raise BridgeError(f"node {self.peer} has had no channel {self.channel!r} for {self.timeout_s} s")
            time.sleep(0.1)
            return records
        self._unknown_since = 0.0
        self.stats.records += taken
        self.stats.bytes += sum(len(r) for r in records[:taken])
        return records[taken:]

    def _run(self) -> None:
        pending: list[bytes] = []
        local_open = True
        while not self._stop.is_set() and (local_open or pending):
            if local_open and len(pending) < self.batch:
                try:
                    pending += self.reader.get_many(self.batch - len(pending), timeout=0.05 if pending else 0.2)
                except RingError:  # the local producer closed (or died) and everything it wrote was taken
                    if self.follow_restarts:
                        self._stop.wait(0.2)  # a restarted producer re-claims the ring's writing end
                    else:
                        local_open = False
            if not pending:
                continue
            try:
                rest = self.send_now(pending)
            except Exception as err:  # noqa: BLE001 - RPC reports a dead or hung peer as RuntimeError & co
                self._lose(err, len(pending))
                return
            self.stats.deferred += len(rest)
            pending = rest
        self.finished = not pending

    def _lose(self, err: Exception, dropped: int) -> None:
        self.lost = err
        self.stats.dropped += dropped
        if self.on_lost is not None:
            self.on_lost(self.peer, err)


_EVENTS: dict[str, threading.Event] = {}


def _event(name: str) -> threading.Event:
    with _LOCK:
        return _EVENTS.setdefault(name, threading.Event())


def notify(name: str) -> bool:
    """RPC target: set this node's event `name` (e.g. "stop": the trainer node tells every node the run ended)."""
    _event(name).set()
    return True


def wait_event(name: str, timeout: float | None = None) -> bool:
    """Wait until another node `notify`-ed `name` here; False on timeout."""
    return _event(name).wait(timeout)


def notify_peer(peer: str, name: str, timeout_s: float) -> bool:
    """Set event `name` on node `peer`; False if the peer did not answer within `timeout_s`."""
    from torch.distributed import rpc

    try:
        return bool(rpc.rpc_sync(peer, notify, args=(name,), timeout=timeout_s))
    except Exception:  # noqa: BLE001 - a dead or hung peer
        return False


_SERVICES: dict[str, Callable[..., object]] = {}


def register_service(name: str, fn: Callable[..., object]) -> None:
    """Offer `fn` to other nodes as `name` (arguments and results: ints, floats, strs and tensors only)."""
    with _LOCK:
        _SERVICES[name] = fn


class ServiceNotReadyError(BridgeError):
    """The peer answered but offers no such service (yet): it is probably still starting."""


def serve(name: str, *args: object) -> object:
    """RPC target: run this node's service `name`; None if there is no such service (yet)."""
    fn = _SERVICES.get(name)
    return None if fn is None else fn(*args)


def call(peer: str, name: str, *args: object, timeout_s: float = 30.0) -> object:
    """Run service `name` on node `peer` and return its result. Raises ServiceNotReadyError if the peer has no such
    service (yet), and RPC's error on failure or past `timeout_s`."""
    from torch.distributed import rpc

    result = rpc.rpc_sync(peer, serve, args=(name, *args), timeout=timeout_s)
    if result is None:
        raise ServiceNotReadyError(f"node {peer} offers no service {name!r} (yet)")
    return result
