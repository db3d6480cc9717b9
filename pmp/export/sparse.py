"""Inference on an exported `.pmp` file with compiled kernels (numba), no torch ops inside.

Why this shape: at deployment sizes (one sequence, or 64) the dense network's time goes to torch's
per-op dispatch, to streaming the 4 MB `fc` matrix, and to many small attention ops; at 98%
sparsity the pruned layers are ~40k multiply-adds. So the forward pass is two compiled calls over
float32 numpy arrays (docs/deploy.md has the measurements that chose each piece):

- query/key/gc share their input, so they are one stacked CSR matrix (rows q|k|gc) applied to a
  tile of node signals: each kept weight is one axpy over the tile's columns;
- attention, softmax and the per-head mixing run on that tile with a vectorisable exp, in one of
  two layouts: below LANES samples, per sample with the attending nodes as the vector lanes
  (tiles of GROUP samples x nodes); from LANES samples on, with the samples as the lanes (tiles of
  nodes x LANE_TILE samples), which needs no padding of the node count;
- `fc` is CSR times the (features, batch) activations: a gather-dot per row for one sample, an
  axpy over the batch per kept weight otherwise; the classifier follows (dense or CSR);
- BatchNorms are already per-feature affines (folded at export), the attention scale 1/sqrt(d) is
  folded into the query rows here, and dropout does not exist at inference.

Batches of more than GROUP samples spread their work over numba's threads (numba.set_num_threads):
node-lane tiles whole, batch-lane products by row blocks and the attention by heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import torch
from torch import nn

from ._simd import WIDTH, add8, div8, exp2i8, floor8, fma8, hsum8, load8, max8, mul8, splat8, store8, sub8, vec8
from .format import CompactModel, ExportFormatError, SparseTensor, meta_model, read_compact

_JIT = dict(nogil=True, cache=True, fastmath=True, boundscheck=False)
#: numba's loop vectoriser works in blocks of 8 floats x 4 interleaved: an inner loop shorter than
#: 32 runs scalar. So per-node loops run over 32 "lanes" (nodes, padded), not over V = 21.
LANES = 32
#: Samples whose node signals go through the stacked q|k|gc matrix together (one tile): 16 x 21
#: columns keep that product in its vectorised regime and its tile in L2. Tiles are also the unit
#: of multi-threading.
GROUP = 16
#: Columns of the sparse products' register blocks (4 vectors); tiles are padded to a multiple.
BLOCK = 4 * WIDTH
#: Batches of LANES or more run in the batch-lane layout, LANE_TILE samples per tile: the samples
#: are the vector lanes of the attention (measured: 1.7x faster than node lanes at batch 64).
LANE_TILE = 64

# Cephes expf (`_exp8`): Cody-Waite reduction by ln 2 (split in two), degree-6 polynomial, 2^n put
# in the exponent bits. Relative error ~1e-7.
_LOG2E, _LN2_HI, _LN2_LO = np.float32(1.44269504088896341), np.float32(0.693359375), np.float32(-2.12194440e-4)
_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                    1.6666665459e-1, 5.0000001201e-1))
_EXP_MIN = np.float32(-87.0)
_HALF, _ONE, _ZERO = np.float32(0.5), np.float32(1.0), np.float32(0.0)
# Unsigned steps for kernel loop counters: a signed index costs a negative-index check on every
# array access (numba wraps x[-1]); with these the fc gather-dot runs ~2.5x faster. (uint64 +
# a plain int literal would give float64 in numba, hence the typed constants.)
_U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8 = (np.uint64(k) for k in range(1, 9))


@numba.njit(inline="always", **_JIT)
def _relu(x):  # pragma: no cover - compiled
    """max(x, 0), exactly, without a compare-and-select: numba's max() and conditional
    expressions kept loops they were in from vectorising (scalar code, seen in the assembly)."""
    return _HALF * (x + abs(x))


@numba.njit(inline="always", **_JIT)
def _axpy4(o, w0, x0, w1, x1, w2, x2, w3, x3):  # pragma: no cover - compiled
    """o += w0 x0 + w1 x1 + w2 x2 + w3 x3: four terms per pass over o, a quarter of its loads/stores."""
    for c in range(o.shape[0]):
        o[c] += (w0 * x0[c] + w1 * x1[c]) + (w2 * x2[c] + w3 * x3[c])


@numba.njit(inline="always", **_JIT)
def _axpy(o, w, x):  # pragma: no cover - compiled
    for c in range(o.shape[0]):
        o[c] += w * x[c]


@numba.njit(**_JIT)
def _spmm(ptr, idx, val, bias, x, out):  # pragma: no cover - compiled
    """out[i, :] = bias[i] + sum_k val[k] * x[idx[k], :] over row i's kept weights (CSR), for x
    and out with a multiple of BLOCK columns: per block of columns, each output row is built in
    four vector registers and stored once, each kept weight one broadcast and four fused
    multiply-adds on a row slice of x that stays in L1 for the whole block."""
    width, rows = x.shape[1], ptr.shape[0] - 1
    if width % BLOCK or out.shape[1] != width:
        raise ValueError("_spmm: x and out need the same number of columns, a multiple of BLOCK")
    xf, of = x.reshape(-1), out.reshape(-1)
    for c in range(0, width, BLOCK):
        for i in range(rows):
            a0 = a1 = a2 = a3 = splat8(bias[i])
            for k in range(ptr[i], ptr[i + 1]):
                w, r = splat8(val[k]), idx[k] * width + c
                a0, a1 = fma8(w, load8(xf, r), a0), fma8(w, load8(xf, r + WIDTH), a1)
                a2, a3 = fma8(w, load8(xf, r + 2 * WIDTH), a2), fma8(w, load8(xf, r + 3 * WIDTH), a3)
            o = i * width + c
            store8(of, o, a0)
            store8(of, o + WIDTH, a1)
            store8(of, o + 2 * WIDTH, a2)
            store8(of, o + 3 * WIDTH, a3)


@numba.njit(**_JIT)
def _lane_matmul(w, x, xr, xc, out):  # pragma: no cover - compiled
    """out[i, :] = sum_j w[i, j] * x[xr + j, xc:xc + lanes]: the dense twin of `_spmm` for the
    attention's small products (w may be a strided view; the x rows are contiguous lane vectors)."""
    lanes, n = out.shape[1], np.uint64(w.shape[1])
    xr, xc = np.uint64(xr), np.uint64(xc)
    xe = xc + np.uint64(lanes)
    for i in range(w.shape[0]):
        o, wi = out[i], w[i]
        o[:] = 0
        j = np.uint64(0)
        while j + _U4 <= n:
            r = xr + j
            _axpy4(o, wi[j], x[r, xc:xe], wi[j + _U1], x[r + _U1, xc:xe], wi[j + _U2], x[r + _U2, xc:xe],
                   wi[j + _U3], x[r + _U3, xc:xe])
            j += _U4
        while j < n:
            _axpy(o, wi[j], x[xr + j, xc:xe])
            j += _U1


@numba.njit(**_JIT)
def _spmv(ptr, idx, val, bias, x, out):  # pragma: no cover - compiled
    """out[i] = bias[i] + sum_k val[k] * x[idx[k]]: eight kept weights at a time, their values one
    vector load, their inputs eight scalar loads put in a vector, one fused multiply-add (fewer
    load instructions per weight than a scalar loop, which is what bounds this gather-dot)."""
    for i in range(ptr.shape[0] - 1):
        k, end = ptr[i], ptr[i + 1]
        acc = splat8(_ZERO)
        while k + _U8 <= end:
            g = vec8(x[idx[k]], x[idx[k + _U1]], x[idx[k + _U2]], x[idx[k + _U3]], x[idx[k + _U4]],
                     x[idx[k + _U5]], x[idx[k + _U6]], x[idx[k + _U7]])
            acc = fma8(load8(val, k), g, acc)
            k += _U8
        total = bias[i] + hsum8(acc)
        while k < end:
            total += val[k] * x[idx[k]]
            k += _U1
        out[i] = total


@numba.njit(**_JIT)
def _linear(ptr, idx, val, bias, x, out):  # pragma: no cover - compiled
    """Sparse linear layer on (features, batch) activations into out (out_features, batch)."""
    if x.shape[1] == 1:  # reshape, not x[:, 0]: a contiguous vector keeps the gathers cheap
        _spmv(ptr, idx, val, bias, x.reshape(-1), out.reshape(-1))
    else:
        _spmm(ptr, idx, val, bias, x, out)


@numba.njit(parallel=True, **_JIT)
def _linear_rows_parallel(ptr, idx, val, bias, x, out, blocks):  # pragma: no cover - compiled
    """`_linear` with the output rows split into `blocks` blocks of equal work (kept weights)."""
    rows, total = ptr.shape[0] - 1, ptr[-1]
    for b in numba.prange(blocks):
        lo = np.searchsorted(ptr, total * np.uint64(b) // np.uint64(blocks))
        hi = np.searchsorted(ptr, total * np.uint64(b + 1) // np.uint64(blocks)) if b + 1 < blocks else rows
        if hi > lo:
            _spmm(ptr[lo:hi + 1], idx, val, bias[lo:hi], x, out[lo:hi])


@numba.njit(**_JIT)
def _node_signals(x, b0, count, scale, shift, out):  # pragma: no cover - compiled
    """Samples b0..b0+count of x (B, T, V, C) as node trajectories through the input BatchNorm
    affine (scale, shift: (T*C, V)): out[t*C + c, g*V + v] for sample b0 + g."""
    _, frames, nodes, chans = x.shape
    for g in range(count):
        for t in range(frames):
            for c in range(chans):
                d = t * chans + c
                o, sc, sh = out[d, g * nodes:(g + 1) * nodes], scale[d], shift[d]
                for v in range(nodes):
                    o[v] = x[b0 + g, t, v, c] * sc[v] + sh[v]


@numba.njit(inline="always", **_JIT)
def _exp8(v):  # pragma: no cover - compiled
    """exp(v) for v <= 0 on a vector (softmax after subtracting the max), in registers; below
    EXP_MIN it returns exp(EXP_MIN) ~ 1.6e-38 (negligible in a softmax sum)."""
    p0, p1, p2, p3, p4, p5 = _P
    v = max8(v, splat8(_EXP_MIN))
    n = floor8(fma8(v, splat8(_LOG2E), splat8(_HALF)))
    r = fma8(n, splat8(-_LN2_LO), fma8(n, splat8(-_LN2_HI), v))
    y = fma8(fma8(fma8(fma8(fma8(splat8(p0), r, splat8(p1)), r, splat8(p2)), r, splat8(p3)), r, splat8(p4)), r,
             splat8(p5))
    return mul8(fma8(mul8(y, r), r, add8(r, splat8(_ONE))), exp2i8(n))


@numba.njit(inline="always", **_JIT)
def _term(a, i, bcast):  # pragma: no cover - compiled
    """a[i:i + 8] as a vector, or a[i] in every lane."""
    return splat8(a[i]) if bcast else load8(a, i)


@numba.njit(**_JIT)
def _gemm_lanes(a, a0, ats, ais, b, b0, bts, bjs, n, m, p, out, o0, ois, ojs, scale, shift, sis, sjs, relu,
                a_bcast):  # pragma: no cover - compiled
    """Small products on vectors of 8 lanes: for i < m, j < p,
    out[o0 + i ois + j ojs] = act(scale[.] * sum_t a[a0 + t ats + i ais] b[b0 + t bts + j bjs] + shift[.])
    over t < n, every term a vector of 8 lanes (offsets in floats of the flat arrays; scale and
    shift at i sis + j sjs; act = ReLU if relu). With a_bcast the a terms are scalars broadcast
    to the lanes: an ordinary product whose j columns come 8 at a time; without, eight
    independent products, one per lane. Blocks of 4 i x 3 j keep 12 accumulators in registers:
    7 loads feed 12 fused multiply-adds (edge blocks repeat their last row/column)."""
    for j0 in range(0, p, 3):
        j1, j2 = min(j0 + 1, p - 1), min(j0 + 2, p - 1)
        for i0 in range(0, m, 4):
            i1, i2, i3 = min(i0 + 1, m - 1), min(i0 + 2, m - 1), min(i0 + 3, m - 1)
            x0, x1, x2, x3 = a0 + i0 * ais, a0 + i1 * ais, a0 + i2 * ais, a0 + i3 * ais
            y0, y1, y2 = b0 + j0 * bjs, b0 + j1 * bjs, b0 + j2 * bjs
            c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = splat8(_ZERO)
            for t in range(n):
                ta, tb = t * ats, t * bts
                k0, k1 = _term(a, x0 + ta, a_bcast), _term(a, x1 + ta, a_bcast)
                k2, k3 = _term(a, x2 + ta, a_bcast), _term(a, x3 + ta, a_bcast)
                q0, q1, q2 = load8(b, y0 + tb), load8(b, y1 + tb), load8(b, y2 + tb)
                c00, c01, c02 = fma8(k0, q0, c00), fma8(k0, q1, c01), fma8(k0, q2, c02)
                c10, c11, c12 = fma8(k1, q0, c10), fma8(k1, q1, c11), fma8(k1, q2, c12)
                c20, c21, c22 = fma8(k2, q0, c20), fma8(k2, q1, c21), fma8(k2, q2, c22)
                c30, c31, c32 = fma8(k3, q0, c30), fma8(k3, q1, c31), fma8(k3, q2, c32)
            for i, j, c in ((i0, j0, c00), (i0, j1, c01), (i0, j2, c02), (i1, j0, c10), (i1, j1, c11), (i1, j2, c12),
                            (i2, j0, c20), (i2, j1, c21), (i2, j2, c22), (i3, j0, c30), (i3, j1, c31), (i3, j2, c32)):
                e = i * sis + j * sjs
                y = fma8(c, splat8(scale[e]), splat8(shift[e]))
                store8(out, o0 + i * ois + j * ojs, max8(y, splat8(_ZERO)) if relu else y)


@numba.njit(**_JIT)
def _softmax8(s, n, groups, su, sg):  # pragma: no cover - compiled
    """In place, lane by lane: the n vectors s[g sg + u su : +8], u < n, become their softmax over
    u, for each group g < groups (s flat)."""
    for g in range(groups):
        base = g * sg
        top = load8(s, base)
        for u in range(1, n):
            top = max8(top, load8(s, base + u * su))
        tot = splat8(_ZERO)
        for u in range(n):
            e = _exp8(sub8(load8(s, base + u * su), top))
            store8(s, base + u * su, e)
            tot = add8(tot, e)
        inv = div8(splat8(_ONE), tot)
        for u in range(n):
            store8(s, base + u * su, mul8(load8(s, base + u * su), inv))


@numba.njit(**_JIT)
def _attend(qkv, col, heads, adim, gdim, scale, shift, feats, b, probs, mix, unit):  # pragma: no cover - compiled
    """Attention for the sample whose nodes are columns col.. of the tile `qkv` (rows q | k | gc).

    The attending node v is the vector lane (ceil(V / 8) vectors; lanes past V read the next
    sample or padding and are discarded): scores s[u, v] = k_u . q_v and the mixture
    m[d, v] = sum_u g[d, u] s[u, v] are register-blocked products (`_gemm_lanes` with the k and g
    terms broadcast), the softmax over u runs per lane, then gc BatchNorm + ReLU into feats[:, b].
    `probs` is V x (8 ceil(V / 8)) float32 scratch, `mix` gc_dim x (8 ceil(V / 8)); `unit` holds
    (1, 0)."""
    width = qkv.shape[1]
    nodes, row = probs.shape
    vecs = row // WIDTH
    flat, pf, mf = qkv.reshape(-1), probs.reshape(-1), mix.reshape(-1)
    one, zero = unit[:1], unit[1:]
    for h in range(heads):
        q_row, k_row = h * adim * width + col, (heads + h) * adim * width + col
        g_row = (2 * heads * adim + h * gdim) * width + col
        _gemm_lanes(flat, k_row, width, 1, flat, q_row, width, WIDTH, adim, nodes, vecs, pf, 0, row, WIDTH, one, zero,
                    0, 0, False, True)
        _softmax8(pf, nodes, vecs, row, WIDTH)
        _gemm_lanes(flat, g_row, 1, width, pf, 0, row, WIDTH, nodes, gdim, vecs, mf, 0, row, WIDTH, one, zero, 0, 0,
                    False, True)
        for v in range(nodes):
            for d in range(gdim):
                j = (v * heads + h) * gdim + d
                feats[j, b] = _relu(mix[d, v] * scale[j] + shift[j])


@numba.njit(**_JIT)
def _tile_width(group, nodes):  # pragma: no cover - compiled
    """Columns of a tile: `group` samples' nodes side by side, plus padding so that the last
    sample's LANES lanes stay inside the tile, rounded up to whole BLOCKs (for `_spmm`)."""
    return -(-(group * nodes + -(-nodes // LANES) * LANES - nodes) // BLOCK) * BLOCK


@numba.njit(**_JIT)
def _features_tile(x, t, group, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                   gc_shift, feats):  # pragma: no cover - compiled
    """Everything before fc for samples t*group.. of x: node signals, q|k|gc, attention -> feats."""
    _, frames, nodes, chans = x.shape
    b0 = t * group
    count = min(group, x.shape[0] - b0)
    row = -(-nodes // WIDTH) * WIDTH
    xs = np.zeros((frames * chans, _tile_width(group, nodes)), np.float32)
    qkv = np.empty((q_ptr.shape[0] - 1, xs.shape[1]), np.float32)
    probs, mix = np.empty((nodes, row), np.float32), np.empty((gdim, row), np.float32)
    unit = np.array([1.0, 0.0], np.float32)
    _node_signals(x, b0, count, in_scale, in_shift, xs)
    _spmm(q_ptr, q_idx, q_val, q_bias, xs, qkv)
    for g in range(count):
        _attend(qkv, g * nodes, heads, adim, gdim, gc_scale, gc_shift, feats, b0 + g, probs, mix, unit)


@numba.njit(**_JIT)
def _node_signals_lanes(x, b0, count, scale, shift, out, t0, t1):  # pragma: no cover - compiled
    """Frames t0..t1 of samples b0..b0+count of x as node trajectories, the samples as lanes in
    chunks of WIDTH: out[t*C + c, (s // WIDTH) V WIDTH + v WIDTH + s % WIDTH] (lanes past `count` are
    left as they are). A transpose, one chunk at a time: WIDTH sequential read streams and
    contiguous writes."""
    _, frames, nodes, chans = x.shape
    for g in range(0, count, WIDTH):
        n = min(WIDTH, count - g)
        for t in range(t0, t1):
            for v in range(nodes):
                col = g * nodes + v * WIDTH
                for c in range(chans):
                    d = t * chans + c
                    sc, sh, row = scale[d, v], shift[d, v], out[d]
                    for k in range(n):
                        row[col + k] = x[b0 + g + k, t, v, c] * sc + sh


@numba.njit(parallel=True, **_JIT)
def _node_signals_lanes_parallel(x, b0, count, scale, shift, out, threads):  # pragma: no cover
    """`_node_signals_lanes` with the frames split over the threads (each writes its own rows)."""
    frames = x.shape[1]
    for b in numba.prange(threads):
        _node_signals_lanes(x, b0, count, scale, shift, out, frames * b // threads,
                            frames * (b + 1) // threads)


@numba.njit(**_JIT)
def _attend_lanes(qkv, h, chunks, nodes, heads, adim, gdim, scale, shift, feats, b0, probs, unit):  # pragma: no cover
    """Head h's attention for a batch-lane tile: the samples are the vector lanes, 8 per chunk,
    columns laid out (chunk, v, lane), so each chunk's q, k and gc rows are 8-float vectors per
    node. Per chunk: scores s[v, u] = k_u . q_v as lane-wise products (`_gemm_lanes`), softmax over
    u (`_softmax8`), the mixture m[d, v] = sum_u g[d, u] s[v, u], and gc BatchNorm + ReLU into
    feats[(v heads + h) gdim + d, b0 + chunk*8 + lane]. `probs` is V*V*8 float32 scratch; `unit`
    holds (1, 0), the identity affine of the scores."""
    width, fw = qkv.shape[1], feats.shape[1]
    q_row, k_row, g_row = h * adim * width, (heads + h) * adim * width, (2 * heads * adim + h * gdim) * width
    flat, out = qkv.reshape(-1), feats.reshape(-1)
    step = nodes * WIDTH
    for ch in range(chunks):
        col = ch * step
        _gemm_lanes(flat, k_row + col, width, WIDTH, flat, q_row + col, width, WIDTH, adim, nodes, nodes,
                    probs, 0, WIDTH, step, unit[:1], unit[1:], 0, 0, False, False)
        _softmax8(probs, nodes, nodes, WIDTH, step)
        _gemm_lanes(flat, g_row + col, WIDTH, width, probs, 0, WIDTH, step, nodes, gdim, nodes,
                    out, (h * gdim) * fw + b0 + ch * WIDTH, fw, heads * gdim * fw, scale[h * gdim:], shift[h * gdim:], 1,
                    heads * gdim, True, False)


@numba.njit(parallel=True, **_JIT)
def _attend_heads_parallel(qkv, count, nodes, heads, adim, gdim, scale, shift, feats, b0):  # pragma: no cover
    """`_attend_lanes` for every head, heads spread over numba's threads (each writes its own rows)."""
    unit = np.array([1.0, 0.0], np.float32)
    for h in numba.prange(heads):
        probs = np.empty(nodes * nodes * WIDTH, np.float32)
        _attend_lanes(qkv, h, -(-count // WIDTH), nodes, heads, adim, gdim, scale, shift, feats, b0, probs, unit)


@numba.njit(**_JIT)
def _features_lanes(x, threads, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                    gc_shift, feats):  # pragma: no cover - compiled
    """Everything before fc in the batch-lane layout, LANE_TILE samples at a time: node signals,
    q|k|gc (row blocks over the threads), attention (heads over the threads) -> feats."""
    _, frames, nodes, chans = x.shape
    xs = np.zeros((frames * chans, nodes * LANE_TILE), np.float32)
    qkv = np.empty((q_ptr.shape[0] - 1, xs.shape[1]), np.float32)
    for b0 in range(0, x.shape[0], LANE_TILE):
        count = min(LANE_TILE, x.shape[0] - b0)
        _node_signals_lanes_parallel(x, b0, count, in_scale, in_shift, xs, threads)
        _linear_rows_parallel(q_ptr, q_idx, q_val, q_bias, xs, qkv, threads)
        _attend_heads_parallel(qkv, count, nodes, heads, adim, gdim, gc_scale, gc_shift, feats, b0)


@numba.njit(parallel=True, **_JIT)
def _features_tiles(x, group, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                    gc_shift, feats):  # pragma: no cover - compiled
    """`_features_tile` for every tile, tiles spread over numba's threads."""
    for t in numba.prange(-(-x.shape[0] // group)):
        _features_tile(x, t, group, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                       gc_shift, feats)


@numba.njit(**_JIT)
def _agcn_head(feats, batch, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val, cls_wt, cls_b):  # pragma: no cover
    """fc, ReLU and the classifier -> (batch, classes) logits, for one tile (batch <= GROUP). One
    sample: the classifier densely, its lanes the classes (cls_wt = its weight transposed, zeros
    included); several: CSR over the (padded) batch lanes. No BLAS call: its own thread pool
    would fight numba's for the same cores. (Serial: a function that also holds the parallel
    calls of `_agcn_head_parallel` was measurably slower per call in development.)"""
    hidden = np.empty((f_ptr.shape[0] - 1, feats.shape[1]), np.float32)
    _linear(f_ptr, f_idx, f_val, f_bias, feats, hidden)
    hidden = np.maximum(hidden, _ZERO)
    if batch == 1:
        logits = np.empty((1, cls_b.shape[0]), np.float32)
        _lane_matmul(hidden.T, cls_wt, 0, 0, logits)
        return logits + cls_b
    logits_t = np.empty((cls_b.shape[0], feats.shape[1]), np.float32)
    _spmm(c_ptr, c_idx, c_val, cls_b, hidden, logits_t)
    return np.ascontiguousarray(logits_t[:, :batch].T)


@numba.njit(**_JIT)
def _agcn_head_parallel(feats, batch, threads, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val,
                        cls_b):  # pragma: no cover - compiled
    """`_agcn_head` for batches past one tile: both layers in row blocks over the threads."""
    hidden = np.empty((f_ptr.shape[0] - 1, feats.shape[1]), np.float32)
    logits_t = np.empty((cls_b.shape[0], feats.shape[1]), np.float32)
    _linear_rows_parallel(f_ptr, f_idx, f_val, f_bias, feats, hidden, threads)
    hidden = np.maximum(hidden, _ZERO)
    _linear_rows_parallel(c_ptr, c_idx, c_val, cls_b, hidden, logits_t, threads)
    return np.ascontiguousarray(logits_t[:, :batch].T)


@numba.njit(**_JIT)
def _agcn_tiles(x, in_scale, in_shift):  # pragma: no cover - compiled
    """The node-signal tiles the forward pass feeds to q|k|gc, all at once (benchmarks)."""
    batch, frames, nodes, chans = x.shape
    if batch >= LANES:
        tiles = np.zeros((-(-batch // LANE_TILE), frames * chans, nodes * LANE_TILE), np.float32)
        for t in range(tiles.shape[0]):
            b0 = t * LANE_TILE
            _node_signals_lanes(x, b0, min(LANE_TILE, batch - b0), in_scale, in_shift, tiles[t], 0, frames)
        return tiles
    group = min(batch, GROUP)
    tiles = np.zeros((-(-batch // group), frames * chans, _tile_width(group, nodes)), np.float32)
    for t in range(tiles.shape[0]):
        _node_signals(x, t * group, min(group, batch - t * group), in_scale, in_shift, tiles[t])
    return tiles


@numba.njit(parallel=True, **_JIT)
def _qkv_tiles_parallel(tiles, q_ptr, q_idx, q_val, q_bias, qkv):  # pragma: no cover - compiled
    for t in numba.prange(tiles.shape[0]):
        _spmm(q_ptr, q_idx, q_val, q_bias, tiles[t], qkv[t])


@numba.njit(**_JIT)
def _agcn_pruned_layers(tiles, q_ptr, q_idx, q_val, q_bias, feats, f_ptr, f_idx, f_val, f_bias, qkv,
                        out):  # pragma: no cover - compiled
    """The pruned layers alone, as the forward pass runs them for one tile: q|k|gc, then fc, into
    qkv and out (given: arrays returned from compiled code cost more to box than the layers' work)."""
    _spmm(q_ptr, q_idx, q_val, q_bias, tiles[0], qkv[0])
    _linear(f_ptr, f_idx, f_val, f_bias, feats, out)


@numba.njit(**_JIT)
def _agcn_pruned_layers_parallel(tiles, lane_layout, threads, q_ptr, q_idx, q_val, q_bias, feats, f_ptr, f_idx,
                                 f_val, f_bias, qkv, out):  # pragma: no cover - compiled
    """The same for several tiles, threaded as the forward pass threads them: batch-lane tiles
    (batch >= LANES) and fc in row blocks, node-lane tiles (GROUP < batch < LANES) whole."""
    if lane_layout:
        for t in range(tiles.shape[0]):
            _linear_rows_parallel(q_ptr, q_idx, q_val, q_bias, tiles[t], qkv[t], threads)
    else:
        _qkv_tiles_parallel(tiles, q_ptr, q_idx, q_val, q_bias, qkv)
    _linear_rows_parallel(f_ptr, f_idx, f_val, f_bias, feats, out, threads)


@dataclass(frozen=True)
class CSR:
    """Compressed sparse rows with unsigned column indices (no negative-index checks in the kernels)."""

    ptr: np.ndarray  # uint64, rows + 1
    idx: np.ndarray  # uint16 or uint32
    val: np.ndarray  # float32

    @classmethod
    def stack(cls, parts: list[tuple[SparseTensor, float]]) -> CSR:
        """Row-wise concatenation of 2-D tensors (each scaled by its factor) sharing a column count."""
        cols = {p.shape[1] for p, _ in parts}
        if len(cols) != 1:
            raise ValueError(f"cannot stack matrices with column counts {sorted(cols)}")
        ncols = cols.pop()
        counts = np.concatenate([np.bincount(p.positions // ncols, minlength=p.shape[0]) for p, _ in parts])
        ptr = np.zeros(len(counts) + 1, np.uint64)
        np.cumsum(counts, out=ptr[1:])
        idx = np.concatenate([p.positions % ncols for p, _ in parts]).astype(np.uint16 if ncols <= 1 << 16 else np.uint32)
        val = np.concatenate([p.values * np.float32(f) for p, f in parts]).astype(np.float32)
        return cls(ptr, idx, val)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.ptr, self.idx, self.val


class SparseAttentionGCN(nn.Module):
    """Inference-only AttentionGCN (pmp/models/agcn.py) running on the compiled sparse kernels.

    Holds numpy arrays, no parameters: nothing to train, nothing for autograd to track. Call it on
    a (B, T, V, C) tensor like the dense model; `run` is the same on numpy arrays."""

    def __init__(self, compact: CompactModel):
        super().__init__()
        arch = meta_model(compact.spec)  # sizes only, no weights
        self.spec, self.path = compact.spec, compact.path
        self.file_bytes = compact.path.stat().st_size
        self.heads, self.adim, self.gdim = arch.heads, arch.attn_dim, arch.gc_dim
        kw = compact.spec["kwargs"]
        self.input_shape = (int(kw["in_frames"]), arch.num_nodes, int(kw["in_channels"]))
        frames, nodes, chans = self.input_shape
        d = compact.dense
        self.in_scale = np.ascontiguousarray(d["data_bn.scale"].reshape(nodes, frames * chans).T)
        self.in_shift = np.ascontiguousarray(d["data_bn.shift"].reshape(nodes, frames * chans).T)
        q = 1.0 / math.sqrt(self.adim)  # attention scale folded into the query rows
        self.qkv = CSR.stack([(compact.kept("query.weight"), q), (compact.kept("key.weight"), 1.0),
                              (compact.kept("gc.weight"), 1.0)])
        self.qkv_bias = np.concatenate([d["query.bias"] * np.float32(q), d["key.bias"], d["gc.bias"]])
        self.gc_scale, self.gc_shift = d["gc_bn.scale"], d["gc_bn.shift"]
        self.fc, self.fc_bias = CSR.stack([(compact.kept("fc.weight"), 1.0)]), d["fc.bias"]
        self.cls, self.cls_b = CSR.stack([(compact.kept("classifier.weight"), 1.0)]), d["classifier.bias"]
        self.cls_wt = np.ascontiguousarray(compact.kept("classifier.weight").dense().T)  # pruned or not
        # kernel arguments, built once: at batch 1 the Python side of a call is a sizeable share
        self._front = (self.in_scale, self.in_shift, *self.qkv.arrays, self.qkv_bias, self.heads, self.adim, self.gdim,
                       self.gc_scale, self.gc_shift)
        self._fc = (*self.fc.arrays, self.fc_bias)
        self._qkv = (*self.qkv.arrays, self.qkv_bias)
        self.eval()

    def _features(self, x: np.ndarray) -> np.ndarray:
        """(V*heads*gc_dim, width) fc inputs; width = 1 or the batch padded to LANES (for `_spmm`)."""
        batch = len(x)
        feats = np.zeros((len(self.gc_scale), 1 if batch == 1 else -(-batch // LANES) * LANES), np.float32)
        args = (*self._front, feats)
        if batch <= GROUP:  # one tile: skip the threads' start-up and barrier
            _features_tile(x, 0, batch, *args)
        elif batch < LANES:
            _features_tiles(x, GROUP, *args)
        else:  # enough samples to fill the vector lanes
            _features_lanes(x, numba.get_num_threads(), *args)
        return feats

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape or not len(x):
            raise ValueError(f"expected input (B>=1, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        return x

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, classes) for x (B, T, V, C) float32."""
        x = self._checked(x)
        if len(x) <= GROUP:
            return _agcn_head(self._features(x), len(x), *self._fc, *self.cls.arrays, self.cls_wt, self.cls_b)
        return _agcn_head_parallel(self._features(x), len(x), numba.get_num_threads(), *self._fc, *self.cls.arrays,
                                   self.cls_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().cpu().numpy()))

    def layer_inputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the pruned layers receive for input x, in this runtime's layouts (benchmarks)."""
        x = self._checked(x)
        return _agcn_tiles(x, self.in_scale, self.in_shift), self._features(x)

    def pruned_layers(self, tiles: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Only the sparse layers, on `layer_inputs(x)`: q|k|gc per tile, and fc."""
        lane_layout = tiles.shape[2] == self.input_shape[1] * LANE_TILE  # node-lane tiles are narrower
        qkv = np.empty((len(tiles), len(self.qkv_bias), tiles.shape[2]), np.float32)
        out = np.empty((len(self.fc_bias), feats.shape[1]), np.float32)
        if len(tiles) == 1 and not lane_layout:  # batch <= GROUP: one tile, serial, as in `run`
            _agcn_pruned_layers(tiles, *self._qkv, feats, *self._fc, qkv, out)
        else:
            _agcn_pruned_layers_parallel(tiles, lane_layout, numba.get_num_threads(), *self._qkv, feats, *self._fc, qkv,
                                         out)
        return qkv, out


#: Sparse runtimes by model name (the `model` field of the config).
RUNTIMES: dict[str, Callable[[CompactModel], nn.Module]] = {"agcn": SparseAttentionGCN}


def load_sparse(path: str | Path) -> nn.Module:
    """The inference module for a `.pmp` file, validated first (ExportFormatError otherwise)."""
    compact = read_compact(path)
    runtime = RUNTIMES.get(compact.spec["model"])
    if runtime is None:
        raise ExportFormatError(f"{compact.path}: no sparse runtime for model {compact.spec['model']!r} "
                                f"(have: {', '.join(sorted(RUNTIMES))})")
    return runtime(compact)


def predict(module: nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits for a batch (B, T, V, C) or one sequence (T, V, C); works on dense modules too."""
    t = torch.as_tensor(x, dtype=torch.float32)
    single = t.dim() == 3
    with torch.no_grad():
        out = module(t[None] if single else t)
    return (out[0] if single else out).numpy()

