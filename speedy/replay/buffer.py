"""Prioritized replay of trajectory blocks whose frames live elsewhere (a frame store) and are referenced by id.

Capacity counts positions (agent steps), as EfficientZero's: a buffer of capacity C holds more than C − L positions
once full (L = max block length) whatever the episode lengths, and evicts whole blocks, oldest first.

An actor cuts each episode into blocks of up to `block_length` positions. A block also carries the *lookahead*
the targets of its last position need (unroll K actions and policies, K + n rewards and frame ids), so sampling a
position never needs a second block. Frames are never copied into the buffer: `frame_ids` index a frame store,
and an observation stack at position t is the `stack` ids ending at t.

Layout of one block with L = length, K = unroll steps, n = max TD steps, s = frame stack, A = actions:
    frame_ids     (s − 1 + L + K + n,) int64  ids of observations −(s−1) … L+K+n−1 (history before an episode
                                              start repeats its first frame; entries past the end repeat the last)
    actions       (L + K,)        int64       action taken at each position (0 past the end)
    rewards       (L + K + n,)    float32     reward after the action at each position (0 past the end)
    policies      (L + K, A)      float32     self-play visit distribution (0 past the end)
    valid_steps   int             real transitions available from position 0 (≤ L + K + n); position j is a real
                                              state if j < valid_steps, or the final state if j == valid_steps
    collected_at  int             env steps collected in the whole run when the block's first position was played
    truncated     bool            the episode was cut by the time limit, not ended by the game (targets bootstrap
                                  past its end)

Storage: each field lives in its own flat ring; a block keeps only its real entries there (those before
`valid_steps`, plus the history frames and the final frame), and reads past them return the padding (0, or the last
frame id). Only blocks cut from a running episode carry a full lookahead, so the rings need about C + (C / L + 3) ·
(K + n + s) entries, and about C · s more frame ids for the worst case of one-step episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedy.replay.sumtree import SumTree


@dataclass
class TrajectoryBlock:
    frame_ids: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    policies: np.ndarray
    length: int
    valid_steps: int
    collected_at: int
    truncated: bool = False


@dataclass(frozen=True)
class BlockLayout:
    block_length: int  # L
    unroll_steps: int  # K
    td_steps: int  # n (maximum)
    frame_stack: int  # s
    num_actions: int  # A

    @property
    def lookahead(self) -> int:
        return self.unroll_steps + self.td_steps

    @property
    def frames_per_block(self) -> int:
        return self.frame_stack - 1 + self.block_length + self.lookahead

    def check(self, block: TrajectoryBlock) -> None:
        """Raise ValueError naming the field if `block` does not fit this layout."""
        L, K, n = self.block_length, self.unroll_steps, self.td_steps
        if not 1 <= block.length <= L:
            raise ValueError(f"block length {block.length} outside [1, {L}]")
        expected = {
            "frame_ids": (self.frame_stack - 1 + block.length + K + n,),
            "actions": (block.length + K,),
            "rewards": (block.length + K + n,),
            "policies": (block.length + K, self.num_actions),
        }
        for name, shape in expected.items():
            actual = np.shape(getattr(block, name))
            if actual != shape:
                raise ValueError(f"block field {name} has shape {actual}, expected {shape}")
        if not 1 <= block.valid_steps <= block.length + K + n:
            raise ValueError(f"block valid_steps {block.valid_steps} outside [1, {block.length + K + n}]")


@dataclass
class SampledPositions:
    """B replay positions: `index` (B,) int64 sum-tree leaf of each position, `slot` (B,) int64 block slot holding it,
    `position` (B,) int64 t within the block, `generation` (B,) int64 serial number of that block (detects eviction),
    `weights` (B,) float32 importance-sampling weights, max 1."""

    index: np.ndarray
    slot: np.ndarray
    position: np.ndarray
    generation: np.ndarray
    weights: np.ndarray


class _Ring:
    """One field's flat FIFO storage of variable-length segments; a segment that does not fit before the end of the
    array starts at 0 (the tail is skipped), so every segment is contiguous."""

    def __init__(self, size: int, trailing: tuple[int, ...], dtype: type) -> None:
        self.data = np.zeros((size, *trailing), dtype=dtype)
        self.size = size
        self.cursor = 0

    def fits(self, width: int, oldest_start: int | None) -> bool:
        """Whether a segment of `width` entries can be written without touching the oldest live segment."""
        if oldest_start is None:
            return True
        needed = width if self.cursor + width <= self.size else self.size - self.cursor + width
        return (oldest_start - self.cursor) % self.size >= needed

    def write(self, values: np.ndarray) -> int:
        """Append `values` (width, *trailing) as one segment; returns its start."""
        width = len(values)
        start = self.cursor if self.cursor + width <= self.size else 0
        self.data[start : start + width] = values
        self.cursor = (start + width) % self.size
        return start


# The rings of a buffer; "positions" holds no data, its entries are the sum-tree leaves of the positions.
_FIELDS = ("positions", "frame_ids", "actions", "rewards", "policies")
_FIELD_TYPES = {"positions": lambda layout: ((), np.int64), "frame_ids": lambda layout: ((), np.int64),
                "actions": lambda layout: ((), np.int64), "rewards": lambda layout: ((), np.float32),
                "policies": lambda layout: ((layout.num_actions,), np.float32)}


def ring_sizes(layout: BlockLayout, capacity: int) -> dict[str, int]:
    """Entries of each field's ring for `capacity` positions: the positions, the lookahead of the full blocks
    (length L) a running episode emits, the history and final frame of every block (worst case one-step episodes),
    and room for the skipped tail plus one incoming block."""
    L, K, n, s = layout.block_length, layout.unroll_steps, layout.td_steps, layout.frame_stack
    extra = {"positions": 0, "frame_ids": s - 1 + K + n, "actions": K, "rewards": K + n, "policies": K}
    per_block = {"frame_ids": s}
    return {name: capacity * (1 + per_block.get(name, 0)) + (capacity // L + 1) * extra[name] + 2 * (L + extra[name])
            for name in _FIELDS}


def replay_memory_bytes(layout: BlockLayout, capacity: int) -> int:
    """Bytes a `ReplayBuffer(layout, capacity, …)` allocates: rings, block metadata and the sum-tree."""
    total = 0
    for name, size in ring_sizes(layout, capacity).items():
        trailing, dtype = _FIELD_TYPES[name](layout)
        total += size * int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
    leaves = ring_sizes(layout, capacity)["positions"]
    return total + (capacity + 1) * ((2 * len(_FIELDS) + 4) * 8 + 1) + leaves * (8 + 8 + 1 + 4 * 8)


class ReplayBuffer:
    """Prioritized replay of up to `capacity` positions (oldest blocks evicted first) with a sum-tree over positions.

    Block metadata (`lengths`, `valid_steps`, `collected_at`, `generation` int64, `truncated` bool) is indexed by
    block slot (B,).
    """

    def __init__(self, layout: BlockLayout, capacity: int, alpha: float, priority_eps: float) -> None:
        if capacity < layout.block_length:
            raise ValueError(f"replay capacity {capacity} < block length {layout.block_length}")
        self.layout, self.capacity, self.alpha, self.priority_eps = layout, capacity, alpha, priority_eps
        self.offset = {"positions": 0, "frame_ids": layout.frame_stack - 1, "actions": 0, "rewards": 0,
                       "policies": 0}
        self.rings = {name: _Ring(size, *_FIELD_TYPES[name](layout)) for name, size in ring_sizes(layout,
                                                                                                  capacity).items()}
        self.num_slots = capacity + 1  # live blocks hold ≥ 1 position each
        self.starts = np.zeros((self.num_slots, len(_FIELDS)), dtype=np.int64)
        self.stored = np.zeros((self.num_slots, len(_FIELDS)), dtype=np.int64)  # real entries kept per field
        self.lengths = np.zeros(self.num_slots, dtype=np.int64)
        self.valid_steps = np.zeros(self.num_slots, dtype=np.int64)
        self.truncated = np.zeros(self.num_slots, dtype=bool)
        self.collected_at = np.zeros(self.num_slots, dtype=np.int64)
        self.generation = np.full(self.num_slots, -1, dtype=np.int64)  # serial of the live block; −1 = empty
        position_ring = self.rings["positions"].size
        self.owner = np.zeros(position_ring, dtype=np.int64)  # block slot of each position leaf
        self.priorities = np.zeros(position_ring, dtype=np.float64)  # |error| + ε of live positions, 0 elsewhere
        self.held = np.zeros(position_ring, dtype=bool)  # leaves of live positions
        self.priority_version = np.full(position_ring, -1, dtype=np.int64)  # step of the weights behind a priority
        self.tree = SumTree(position_ring)
        self.blocks_added = 0
        self.positions_added = 0
        self.live_blocks = 0
        self.num_positions = 0

    @property
    def max_priority(self) -> float:
        """Largest priority now in the buffer (1 when empty): what new positions enter at."""
        return float(self.priorities.max()) if self.num_positions else 1.0

    def _oldest(self) -> int | None:
        return (self.blocks_added - self.live_blocks) % self.num_slots if self.live_blocks else None

    def _widths(self, block: TrajectoryBlock) -> list[int]:
        """Entries of each field worth storing: everything before the padding that `valid_steps` marks."""
        L, K, s = block.length, self.layout.unroll_steps, self.layout.frame_stack
        valid, look = block.valid_steps, self.layout.lookahead
        return [L, s - 1 + min(valid + 1, L + look), min(valid, L + K), min(valid, L + look), min(valid, L + K)]

    def _evict_oldest(self) -> None:
        slot = self._oldest()
        assert slot is not None
        start, length = self.starts[slot, 0], self.lengths[slot]
        leaves = np.arange(start, start + length)
        self.tree.set(leaves, np.zeros(length))
        self.priorities[leaves] = 0.0
        self.held[leaves] = False
        self.generation[slot] = -1
        self.live_blocks -= 1
        self.num_positions -= int(length)

    def _make_room(self, block: TrajectoryBlock, widths: list[int]) -> None:
        """Evict oldest blocks until the block's positions fit the capacity and its fields fit their rings."""
        while self.live_blocks:
            oldest = self._oldest()
            over = self.num_positions + block.length > self.capacity
            if not over and all(ring.fits(w, int(self.starts[oldest, i]))
                                for i, (ring, w) in enumerate(zip(self.rings.values(), widths, strict=True))):
                return
            self._evict_oldest()

    def add(self, block: TrajectoryBlock, priorities: np.ndarray | None = None) -> int:
        """Store `block` (evicting the oldest blocks as needed); its positions enter at the buffer's current max
        priority unless `priorities` (length,) |error| values are given. Returns the block's slot."""
        self.layout.check(block)
        widths = self._widths(block)
        self._make_room(block, widths)
        slot = self.blocks_added % self.num_slots
        values = {"positions": np.zeros(block.length, np.int64), "frame_ids": block.frame_ids,
                  "actions": block.actions, "rewards": block.rewards, "policies": block.policies}
        for i, (name, width) in enumerate(zip(_FIELDS, widths, strict=True)):
            self.starts[slot, i] = self.rings[name].write(np.asarray(values[name])[:width])
            self.stored[slot, i] = width
        self.lengths[slot], self.valid_steps[slot] = block.length, block.valid_steps
        self.truncated[slot] = bool(block.truncated)
        self.collected_at[slot], self.generation[slot] = block.collected_at, self.blocks_added
        leaves = np.arange(self.starts[slot, 0], self.starts[slot, 0] + block.length)
        if priorities is None:
            raw = np.full(block.length, self.max_priority)
        else:
            raw = np.asarray(priorities, dtype=np.float64) + self.priority_eps
        self.owner[leaves] = slot
        self.priorities[leaves] = raw
        self.priority_version[leaves] = -1
        self.held[leaves] = True
        self.tree.set(leaves, raw**self.alpha)
        self.blocks_added += 1
        self.live_blocks += 1
        self.positions_added += block.length
        self.num_positions += block.length
        return slot

    def positions(self, index: np.ndarray, weights: np.ndarray | None = None) -> SampledPositions:
        """Describe position leaves `index` (B,) (weights default to 1)."""
        index = np.asarray(index, dtype=np.int64)
        slot = self.owner[index]
        weights = np.ones(len(index), np.float32) if weights is None else weights
        return SampledPositions(index, slot, index - self.starts[slot, 0], self.generation[slot].copy(), weights)

    def sample(self, batch_size: int, beta: float, rng: np.random.Generator) -> SampledPositions:
        """Proportional sample in random order (the sum-tree returns leaves sorted) with importance weights
        (N·P(i))^−β normalised by the batch max."""
        index = rng.permutation(self.tree.sample(batch_size, rng))
        probs = self.tree.get(index) / self.tree.total
        weights = (self.num_positions * probs) ** (-beta)
        return self.positions(index, (weights / weights.max()).astype(np.float32))

    def live_positions(self) -> np.ndarray:
        """Leaves of every position now held, (N,) int64 ascending."""
        return np.flatnonzero(self.held)

    def window(self, name: str, sample: SampledPositions, first: int, width: int) -> np.ndarray:
        """Entries t+first … t+first+width−1 of field `name` (positions counted from the block's position 0) for each
        sampled position t → (B, width, ...). Past a block's stored entries: 0, or the last frame id for frames."""
        column = _FIELDS.index(name)
        stored = self.stored[sample.slot, column][:, None]
        entry = self.offset[name] + sample.position[:, None] + first + np.arange(width)[None, :]
        values = self.rings[name].data[self.starts[sample.slot, column][:, None] + np.minimum(entry, stored - 1)]
        if name == "frame_ids":
            return values
        inside = (entry < stored).reshape(*entry.shape, *([1] * (values.ndim - 2)))
        return values * inside

    def update_priorities(self, index: np.ndarray, generation: np.ndarray, priorities: np.ndarray,
                          version: int = -1) -> int:
        """Set new priorities (|error| + ε) for positions still holding the sampled block. Returns how many applied.

        Ordering: `version` is the training step of the weights that computed the priorities (the trainer's step,
        a refresher's weights version). A position keeps the version of its current priority, and an update
        older than it is ignored, so a refresher's late answer from old weights never overwrites what the trainer
        (or a fresher refresh) set since; equal versions apply in arrival order. New data has version −1."""
        index = np.asarray(index, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        if index.shape != priorities.shape:
            raise ValueError(f"index shape {index.shape} != priorities shape {priorities.shape}")
        live = self.generation[self.owner[index]] == np.asarray(generation)
        live &= self.priority_version[index] <= version
        if not np.any(live):
            return 0
        values = priorities[live] + self.priority_eps
        self.priorities[index[live]] = values
        self.priority_version[index[live]] = version
        self.tree.set(index[live], values**self.alpha)
        return int(live.sum())

    # -- checkpointing ------------------------------------------------------------------------------------------
    _ARRAYS = ("starts", "stored", "lengths", "valid_steps", "truncated", "collected_at", "generation", "owner",
               "priorities", "held", "priority_version")
    _ADDED_LATER = {"truncated"}  # a snapshot written before these existed loads them as all-zero
    _COUNTERS = ("blocks_added", "positions_added", "live_blocks", "num_positions")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything the buffer holds as named numpy arrays (no Python objects: safe to save with np.savez and
        to load with allow_pickle=False). Counters are 0-d int64 arrays; `ring.<field>` the field rings' data,
        `cursor.<field>` their cursors, `tree` the sum-tree's nodes."""
        state = {name: getattr(self, name) for name in self._ARRAYS}
        state |= {name: np.asarray(getattr(self, name), np.int64) for name in self._COUNTERS}
        for field_name, ring in self.rings.items():
            state[f"ring.{field_name}"] = ring.data
            state[f"cursor.{field_name}"] = np.asarray(ring.cursor, np.int64)
        state["tree"] = self.tree.nodes
        state["geometry"] = np.asarray([self.capacity, self.layout.block_length, self.layout.frame_stack,
                                        self.layout.num_actions], np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_dict` returned, from a buffer of the same capacity and layout (else ValueError
        naming the mismatch)."""
        geometry = [self.capacity, self.layout.block_length, self.layout.frame_stack, self.layout.num_actions]
        saved = np.asarray(state["geometry"]).tolist()
        if saved != geometry:
            raise ValueError(f"replay snapshot of (capacity, block length, frame stack, actions) {saved} does not "
                             f"fit this buffer {geometry}")
        for name in self._ARRAYS:
            if name in self._ADDED_LATER and name not in state:
                getattr(self, name)[...] = 0
                continue
            _copy_into(getattr(self, name), state[name], name)
        for name in self._COUNTERS:
            setattr(self, name, int(state[name]))
        for field_name, ring in self.rings.items():
            _copy_into(ring.data, state[f"ring.{field_name}"], f"ring.{field_name}")
            ring.cursor = int(state[f"cursor.{field_name}"])
        _copy_into(self.tree.nodes, state["tree"], "tree")


def _copy_into(dst: np.ndarray, src: np.ndarray, name: str) -> None:
    if dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(f"replay snapshot field {name!r} is {src.dtype} {src.shape}, expected {dst.dtype} {dst.shape}")
    dst[...] = src
