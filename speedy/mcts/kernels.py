"""Numba kernels of the batched MCTS engine: each loops over all B roots in one call.

Tree arrays (one tree per root; N = S + 1 nodes; node k + 1 is created by simulation k, the root is
node 0; node n of root b is at [n, b], NODE-MAJOR; a child index of -1 means "not expanded yet"):

    children_index  (N, B, A) int32    node index of child a, or -1
    children_prior  (N, B, A) float32  prior of child a
    visit_count     (N, B)    int32
    value_sum       (N, B)    float64  (float64 so the engine and the reference agree bit for bit)
    value_prefix    (N, B)    float64  caller's float32 value prefix, widened
    is_reset        (N, B)    bool     value-prefix LSTM reset at this node
    parent          (N, B)    int32    parent node (-1 at the root)
    action          (N, B)    int32    action from the parent (-1 at the root)
    depth           (N, B)    int32    root = 0
    bounds          (B, 2)    float64  running [min, max] of backed-up Q per root
    rng_state       (B,)      uint64   tie-break stream per root (speedy.mcts.rng)

Why node-major, not one tree after another (mctx's [b, n]): every kernel loops over the roots in
order, and each simulation touches the same node slots in every tree (the root, the new node k + 1,
and mostly low-numbered nodes near the root). Node-major puts slot n of consecutive trees side by
side, so those accesses stream through memory (the hardware prefetcher follows them) and one cache
line of a node array serves 8-16 trees. On the Intel Xeon VM, cachegrind (L2 modelled as 2 MiB)
counts 20 L2 misses per root and simulation at (2048, 18, 50), against 38 with [b, n]. The expand
kernel also prefetches the leaf parent's lines `PREFETCH_DISTANCE` roots ahead (the one access
there that does not stream). At B = 2048 the trees (≈ 19 MB) no longer fit in L2 either way.

Arithmetic is float64 in the same order as `speedy.mcts.reference`, without fastmath, so both pick
the same actions; priors are rounded to float32 once at expansion.

libm calls and Intel's AVX transition penalty: exp (softmax) and log (pUCT) must be glibc's, as in the
reference, and glibc's wrappers are legacy-SSE code. On Intel cores, SSE code run while the upper
halves of the ymm registers are "dirty" pays a penalty on every instruction (measured ≈ 115 ns per exp
on an Intel Xeon VM, 20× the exp itself; AMD has no such penalty). LLVM inserts `vzeroupper` before
calls only when it sees a ymm register, and misses 256-bit instructions with a memory source such as
the `vcvtpd2ps` of the float64 -> float32 prior stores, so every exp after them ran dirty: 85 % of the
(256, 18, 50) search time on that host. Hence `_clean_upper` before each exp, and a per-Searcher
table of the pUCT log term (`exploration_table`) so selection calls no libm function at all.
"""

from __future__ import annotations

import math
import platform

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

from speedy.mcts.rng import draw_below

TIE_EPSILON = 1e-6
PREFETCH_DISTANCE = 8  # roots ahead whose leaf-parent lines expand_and_backup prefetches

_draw_below = njit(cache=True)(draw_below)


def _target_has_avx() -> bool:
    """True when numba compiles for an x86-64 target with AVX (the features numba's JIT itself uses)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return "+avx" in features.split(",")


_EMIT_VZEROUPPER = _target_has_avx()
if _EMIT_VZEROUPPER:
    llvm.initialize_native_asmparser()  # numba initialises the printer only; inline asm needs the parser


@intrinsic
def _clean_upper(typingctx, x):
    """Return float64 `x` unchanged after a `vzeroupper` (nothing on non-AVX targets).

    Feed the result straight into a libm call: the data dependency keeps the `vzeroupper` ahead of
    the call, so the call's legacy-SSE code runs with clean upper register state (module docstring).
    The value travels through a general-purpose register and xmm0-15 are declared clobbered, so no
    vector value can be held across the instruction.
    """
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        if not _EMIT_VZEROUPPER:
            return args[0]
        i64 = ir.IntType(64)
        clobbers = ",".join(f"~{{xmm{i}}}" for i in range(16))
        asm = ir.InlineAsm(ir.FunctionType(i64, [i64]), "vzeroupper", "=r,0," + clobbers, side_effect=True)
        bits = builder.call(asm, [builder.bitcast(args[0], i64)])
        return builder.bitcast(bits, ir.DoubleType())

    return types.float64(types.float64), codegen


@intrinsic
def _prefetch(typingctx, arr, flat_index):
    """Hint the CPU to fetch the line of element `flat_index` of C-contiguous `arr` to write it; no other effect.

    Emits LLVM's `llvm.prefetch` for writing (prefetchw: the expand kernel updates these lines; high
    locality). The index is not bounds-checked, harmless for a prefetch,
    but callers keep it inside the array anyway.
    """
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(flat_index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = builder.gep(ary.data, [index])
        byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr.type], fnty)
        builder.call(fn, [byte_ptr, i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, flat_index), codegen


def exploration_table(num_simulations: int, pb_c_base: float, pb_c_init: float) -> np.ndarray:
    """(num_simulations + 1,) float64: entry n = log((n + pb_c_base + 1) / pb_c_base) + pb_c_init.

    The pUCT exploration factor of a node whose children have n visits in total, computed with
    Python's math.log exactly as `speedy.mcts.reference` does (same libm, same operands, same bits).
    """
    return np.array(
        [math.log((n + pb_c_base + 1.0) / pb_c_base) + pb_c_init for n in range(num_simulations + 1)],
        dtype=np.float64,
    )


@njit(cache=True)
def _softmax_row(logits, row, scratch):
    """Max-subtracted softmax of float32 logits[row] into float64 scratch (A,) (in place)."""
    num_actions = logits.shape[1]
    top = np.float64(logits[row, 0])
    for a in range(1, num_actions):
        x = np.float64(logits[row, a])
        if x > top:
            top = x
    total = 0.0
    for a in range(num_actions):
        e = math.exp(_clean_upper(np.float64(logits[row, a]) - top))
        scratch[a] = e
        total += e
    for a in range(num_actions):
        scratch[a] = scratch[a] / total


@njit(cache=True)
def init_roots(
    children_index, children_prior, visit_count, value_sum, value_prefix, is_reset,
    parent, action, depth, bounds, root_value_prefix, logits, noise, use_noise, fraction,
):
    """Make node 0 of every tree a root: priors softmax(logits) (mixed with noise), visit count 1.

    root_value_prefix (B,) float32; logits (B, A) float32; noise (B, A) float32 (read if use_noise); fraction (B,)
    float32, each root's weight of its noise (0: that root's priors are the network's).
    """
    _, batch, num_actions = children_index.shape
    scratch = np.empty(num_actions, np.float64)
    for b in range(batch):
        _softmax_row(logits, b, scratch)
        for a in range(num_actions):
            p = scratch[a]
            if use_noise:
                f = np.float64(fraction[b])
                p = p * (1.0 - f) + np.float64(noise[b, a]) * f
            children_prior[0, b, a] = np.float32(p)
            children_index[0, b, a] = -1
        visit_count[0, b] = 1
        value_sum[0, b] = 0.0
        value_prefix[0, b] = np.float64(root_value_prefix[b])
        is_reset[0, b] = False
        parent[0, b] = -1
        action[0, b] = -1
        depth[0, b] = 0
        bounds[b, 0] = np.inf
        bounds[b, 1] = -np.inf


@njit(cache=True)
def select_leaves(
    children_index, children_prior, visit_count, value_sum, value_prefix, is_reset, depth, bounds,
    rng_state, pb_c, discount, value_delta_max, lstm_horizon,
    out_parent, out_action, out_depth, out_reset,
):
    """Descend every tree by pUCT to an unexpanded child; write (parent node, action, depth, reset).

    pb_c (S + 1,) float64 is `exploration_table(S, pb_c_base, pb_c_init)`.

    Outputs out_parent, out_action, out_depth (B,) int32 and out_reset (B,) bool are overwritten.
    """
    _, batch, num_actions = children_index.shape
    q_buf = np.empty(num_actions, np.float64)  # Q of visited children, mean Q for the others
    n_buf = np.empty(num_actions, np.int32)  # child visit counts (0 = unvisited)
    candidates = np.empty(num_actions, np.int32)
    for b in range(batch):
        low = bounds[b, 0]
        delta = bounds[b, 1] - low
        scale = max(delta, value_delta_max)
        node = 0
        parent_mean_q = 0.0
        is_root = True
        while True:
            if visit_count[node, b] == 1:
                # A node visited once has no visited child: every child scores pb_c * 0 * prior + the
                # same clipped mean Q, a tie of all A actions, broken exactly as the loops below would.
                chosen = _draw_below(rng_state, b, num_actions) if num_actions > 1 else 0
                break
            node_prefix = value_prefix[node, b]
            node_reset = is_reset[node, b]
            total = 0.0
            visited = 0
            for a in range(num_actions):
                c = children_index[node, b, a]
                if c >= 0:
                    child_visits = visit_count[c, b]
                    r = value_prefix[c, b] if node_reset else value_prefix[c, b] - node_prefix
                    q = r + discount * (value_sum[c, b] / child_visits)
                    q_buf[a] = q
                    n_buf[a] = child_visits
                    total += q
                    visited += 1
                else:
                    n_buf[a] = 0
            mean_q = total / visited if is_root and visited > 0 else (parent_mean_q + total) / (visited + 1)
            is_root = False
            parent_mean_q = mean_q

            n = visit_count[node, b] - 1
            node_pb_c = pb_c[n]
            sqrt_n = math.sqrt(n)
            best = -np.inf
            num_candidates = 0
            for a in range(num_actions):
                child_visits = n_buf[a]
                q = q_buf[a] if child_visits > 0 else mean_q
                prior_score = node_pb_c * (sqrt_n / (child_visits + 1)) * children_prior[node, b, a]
                if delta > 0.0:
                    q = (q - low) / scale
                value_score = min(max(q, 0.0), 1.0)
                score = prior_score + value_score
                if score > best:
                    best = score
                    candidates[0] = a
                    num_candidates = 1
                elif score >= best - TIE_EPSILON:
                    candidates[num_candidates] = a
                    num_candidates += 1
            chosen = candidates[0]
            if num_candidates > 1:
                chosen = candidates[_draw_below(rng_state, b, num_candidates)]
            child = children_index[node, b, chosen]
            if child < 0:
                break
            node = child
        leaf_depth = depth[node, b] + 1
        out_parent[b] = node
        out_action[b] = chosen
        out_depth[b] = leaf_depth
        out_reset[b] = lstm_horizon > 0 and leaf_depth % lstm_horizon == 0


@njit(cache=True)
def expand_and_backup(
    new_node, children_index, children_prior, visit_count, value_sum, value_prefix, is_reset,
    parent, action, depth, bounds, leaf_parent, leaf_action, leaf_depth, leaf_reset,
    leaf_value, leaf_value_prefix, leaf_logits, discount,
):
    """Create node `new_node` under (leaf_parent[b], leaf_action[b]) in every tree and back up its value.

    leaf_value, leaf_value_prefix (B,) float32; leaf_logits (B, A) float32. Each node on the path adds
    G, counts a visit and adds its Q = r + discount * value to the root's bounds; then G = r + discount * G.
    """
    _, batch, num_actions = children_index.shape
    scratch = np.empty(num_actions, np.float64)
    for b in range(batch):
        ahead = b + PREFETCH_DISTANCE
        if ahead < batch:  # the leaf parent [p, ahead]: flat index p * B + ahead in the (N, B) arrays
            slot = leaf_parent[ahead] * batch + ahead
            _prefetch(children_index, slot * num_actions + leaf_action[ahead])
            _prefetch(visit_count, slot)
            _prefetch(value_sum, slot)
            _prefetch(value_prefix, slot)
            _prefetch(parent, slot)
            _prefetch(is_reset, slot)
        p = leaf_parent[b]
        children_index[p, b, leaf_action[b]] = new_node
        parent[new_node, b] = p
        action[new_node, b] = leaf_action[b]
        depth[new_node, b] = leaf_depth[b]
        value_prefix[new_node, b] = np.float64(leaf_value_prefix[b])
        is_reset[new_node, b] = leaf_reset[b]
        visit_count[new_node, b] = 0
        value_sum[new_node, b] = 0.0
        _softmax_row(leaf_logits, b, scratch)
        for a in range(num_actions):
            children_prior[new_node, b, a] = np.float32(scratch[a])
            children_index[new_node, b, a] = -1

        low = bounds[b, 0]
        high = bounds[b, 1]
        g = np.float64(leaf_value[b])
        node = new_node
        while True:
            value_sum[node, b] += g
            visit_count[node, b] += 1
            if node == 0:
                r = value_prefix[0, b]
            else:
                up = parent[node, b]
                r = value_prefix[node, b] if is_reset[up, b] else value_prefix[node, b] - value_prefix[up, b]
            q = r + discount * (value_sum[node, b] / visit_count[node, b])
            if q > high:
                high = q
            if q < low:
                low = q
            g = r + discount * g
            if node == 0:
                break
            node = parent[node, b]
        bounds[b, 0] = low
        bounds[b, 1] = high


@njit(cache=True)
def root_statistics(children_index, visit_count, value_sum, value_prefix, discount,
                    out_visits, out_value, out_q):
    """Root child visits (B, A) int32, root value (B,) float32, root child Q (B, A) float32 (0 unvisited)."""
    _, batch, num_actions = children_index.shape
    for b in range(batch):
        out_value[b] = np.float32(value_sum[0, b] / visit_count[0, b])
        for a in range(num_actions):
            c = children_index[0, b, a]
            if c >= 0:
                out_visits[b, a] = visit_count[c, b]
                r = value_prefix[c, b] - value_prefix[0, b]
                out_q[b, a] = np.float32(r + discount * (value_sum[c, b] / visit_count[c, b]))
            else:
                out_visits[b, a] = 0
                out_q[b, a] = 0.0
