"""Compiled products on float32 arrays for the sparse runtimes (numba): model-agnostic.

- `_spmm` / `_spmv` / `_linear`: a CSR matrix (uint64 row pointers, uint16/uint32 columns) times
  activations laid out (features, columns), or one vector;
- `_gemm_lanes`: small dense products on 8-lane vectors, register-blocked, with an affine + ReLU
  epilogue; `_softmax8`, `_exp8`: softmax and exp on vectors; `_dense_matmul`: a small dense
  product in plain loops.

Kernels that hold values in registers are written with the `F32x8` type of `_simd.py`.
Unsigned loop counters and indices: with signed ones numba checks every array access for a
negative index (it wraps x[-1]); `_U1`..`_U8` are typed because uint64 + a plain int literal
gives float64 in numba.
"""

from __future__ import annotations

import numba
import numpy as np

from ._simd import WIDTH, add8, div8, exp2i8, floor8, fma8, hsum8, load8, max8, mul8, splat8, store8, sub8, vec8

_JIT = dict(nogil=True, cache=True, fastmath=True, boundscheck=False)
#: Columns of `_spmm`'s register blocks (4 vectors): its operands need a multiple of it.
BLOCK = 4 * WIDTH

# Cephes expf (`_exp8`): Cody-Waite reduction by ln 2 (split in two), degree-6 polynomial, 2^n put
# in the exponent bits. Relative error ~1e-7.
_LOG2E, _LN2_HI, _LN2_LO = np.float32(1.44269504088896341), np.float32(0.693359375), np.float32(-2.12194440e-4)
_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                    1.6666665459e-1, 5.0000001201e-1))
_EXP_MIN = np.float32(-87.0)
_HALF, _ONE, _ZERO = np.float32(0.5), np.float32(1.0), np.float32(0.0)
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
def _dense_matmul(w, x, out):  # pragma: no cover - compiled
    """out[i, :] = sum_j w[i, j] * x[j, :], dense, four terms per pass over out[i] (w may be a
    strided view): the batch-1 classifier, whose rows are the classes."""
    n = np.uint64(w.shape[1])
    for i in range(w.shape[0]):
        o, wi = out[i], w[i]
        o[:] = 0
        j = np.uint64(0)
        while j + _U4 <= n:
            _axpy4(o, wi[j], x[j], wi[j + _U1], x[j + _U1], wi[j + _U2], x[j + _U2], wi[j + _U3], x[j + _U3])
            j += _U4
        while j < n:
            _axpy(o, wi[j], x[j])
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
def _joint_distances(p, first, second, out):  # pragma: no cover - compiled
    """out[b, k, t] = |p[b, t, first[k]] - p[b, t, second[k]]| (Euclidean over the last dim) for
    positions p (B, T, V, c) of any strides: a skeleton's pairwise distances straight into the
    (B, pairs, T) layout a Conv1d reads, with no V x V matrix, gather or transpose in between."""
    nb, nt, c = p.shape[0], p.shape[1], p.shape[3]
    for b in range(nb):
        for k in range(first.shape[0]):
            i, j = first[k], second[k]
            for t in range(nt):
                s = np.float32(0.0)
                for q in range(c):
                    d = p[b, t, i, q] - p[b, t, j, q]
                    s += d * d
                out[b, k, t] = np.sqrt(s)
