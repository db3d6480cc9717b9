"""The SIMD value type and the register-blocked kernels built on it, against numpy."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.export import _kernels as kernels
from pmp.export._simd import add8, div8, exp2i8, floor8, fma8, hsum8, load8, max8, mul8, splat8, store8, sub8, vec8


@numba.njit
def _ops(a, b, c, out):
    x, y, z = load8(a, 3), load8(b, 0), load8(c, 8)
    store8(out, 0, fma8(x, y, z))
    store8(out, 8, add8(x, y))
    store8(out, 16, sub8(x, y))
    store8(out, 24, mul8(x, y))
    store8(out, 32, div8(x, y))
    store8(out, 40, max8(x, y))
    store8(out, 48, floor8(x))
    store8(out, 56, splat8(np.float32(2.5)))


def test_vector_ops_match_numpy():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=16).astype(np.float32) * 3 for _ in range(3))
    out = np.full(72, np.nan, np.float32)
    _ops(a, b, c, out)
    x, y, z = a[3:11], b[:8], c[8:16]
    expected = [x * y + z, x + y, x - y, x * y, x / y, np.maximum(x, y), np.floor(x), np.full(8, 2.5)]
    for k, e in enumerate(expected):
        np.testing.assert_allclose(out[8 * k:8 * k + 8], e.astype(np.float32), rtol=1e-6, atol=1e-6)
    assert np.isnan(out[64:]).all()  # nothing written past the last vector


@numba.njit
def _gather_sum(x, out):
    v = vec8(x[7], x[0], x[3], x[3], x[1], x[6], x[2], x[5])
    store8(out, 0, v)
    return hsum8(v)


def test_vec8_places_scalars_in_order_and_hsum8_adds_them():
    x = np.arange(1, 9, dtype=np.float32) ** 2
    out = np.empty(8, np.float32)
    total = _gather_sum(x, out)
    np.testing.assert_array_equal(out, x[[7, 0, 3, 3, 1, 6, 2, 5]])
    assert total == pytest.approx(float(out.sum()), rel=1e-6)


@numba.njit
def _pow2(n, out):
    store8(out, 0, exp2i8(load8(n, 0)))


def test_exp2i8_is_exact_over_the_normal_range():
    n = np.arange(-126, 130, dtype=np.float32)[:256].clip(max=127)  # 256 values: whole vectors
    out = np.empty_like(n)
    for k in range(0, len(n), 8):
        _pow2(n[k:k + 8].copy(), out[k:k + 8])
    np.testing.assert_array_equal(out, np.exp2(n.astype(np.float64)).astype(np.float32))


@numba.njit
def _exp(x, out):
    for k in range(0, x.shape[0], 8):
        store8(out, k, kernels._exp8(load8(x, k)))


def test_vector_exp_is_accurate_and_flushes_far_below_zero():
    x = np.concatenate([-np.geomspace(1e-8, 87, 4000), [0.0, -87.0, -100.0, -1e4, -np.inf, 0.0, 0.0]]).astype(np.float32)
    x = np.concatenate([x, np.zeros(-len(x) % 8, np.float32)])
    out = np.empty_like(x)
    _exp(x, out)
    ref = np.exp(x.astype(np.float64))
    ok = x >= -87
    assert np.max(np.abs(out[ok] - ref[ok]) / ref[ok]) < 3e-7
    assert np.all(out[~ok] <= np.float32(np.exp(-87.0)) * 1.0001) and np.all(np.isfinite(out))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), m=st.integers(1, 11), p=st.integers(1, 10), relu=st.booleans(), bcast=st.booleans(),
       seed=st.integers(0, 99))
def test_gemm_lanes_matches_einsum(n, m, p, relu, bcast, seed):
    """Eight products one per lane, or (bcast) one product with its columns 8 at a time; block
    edges (m not a multiple of 4, p of 3) and the affine + ReLU epilogue, for any shape."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, m, 8)).astype(np.float32)  # a[t, i, lane]: ats = m*8, ais = 8
    if bcast:
        a[...] = a[:, :, :1]  # the kernel reads a[t, i, 0] and broadcasts it
    b = rng.normal(size=(p, n, 8)).astype(np.float32)  # b[j, t, lane]: bts = 8, bjs = n*8
    scale, shift = rng.normal(size=(m, p)).astype(np.float32), rng.normal(size=(m, p)).astype(np.float32)
    out = np.full((p, m, 8), np.nan, np.float32)  # out[j, i, lane]: ois = 8, ojs = m*8
    kernels._gemm_lanes(a.reshape(-1), 0, m * 8, 8, b.reshape(-1), 0, 8, n * 8, n, m, p, out.reshape(-1), 0, 8, m * 8,
                       scale.reshape(-1), shift.reshape(-1), p, 1, relu, bcast)
    ref = np.einsum("til,jtl->jil", a, b) * scale.T[:, :, None] + shift.T[:, :, None]
    if relu:
        ref = np.maximum(ref, 0)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 50), blocks=st.integers(1, 3), density=st.floats(0, 1),
       seed=st.integers(0, 99))
def test_spmm_matches_dense_product(rows, cols, blocks, density, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(rows, cols)).astype(np.float32) * (rng.random((rows, cols)) < density)
    x = rng.normal(size=(cols, blocks * kernels.BLOCK)).astype(np.float32)
    bias = rng.normal(size=rows).astype(np.float32)
    ptr = np.concatenate([[0], np.cumsum((w != 0).sum(1))]).astype(np.uint64)
    idx = np.nonzero(w)[1].astype(np.uint16)
    out = np.full((rows, x.shape[1]), np.nan, np.float32)
    kernels._spmm(ptr, idx, w[w != 0], bias, x, out)
    np.testing.assert_allclose(out, w @ x + bias[:, None], rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 300), density=st.floats(0, 1), seed=st.integers(0, 99))
def test_spmv_matches_dense_product(rows, cols, density, seed):
    """Rows of any length: whole groups of 8 kept weights, the remainder, and empty rows."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(rows, cols)).astype(np.float32) * (rng.random((rows, cols)) < density)
    x, bias = rng.normal(size=cols).astype(np.float32), rng.normal(size=rows).astype(np.float32)
    ptr = np.concatenate([[0], np.cumsum((w != 0).sum(1))]).astype(np.uint64)
    out = np.full(rows, np.nan, np.float32)
    kernels._spmv(ptr, np.nonzero(w)[1].astype(np.uint16), w[w != 0], bias, x, out)
    np.testing.assert_allclose(out, w @ x + bias, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n, groups", [(1, 1), (5, 3), (21, 21), (21, 3)])
def test_softmax8_normalises_every_lane(n, groups):
    """Both strides the runtime uses: groups outermost (batch lanes) and the softmax axis outermost
    (node lanes)."""
    rng = np.random.default_rng(n)
    s = (rng.normal(size=(groups, n, 8)) * 20).astype(np.float32)
    e = np.exp(s - s.max(1, keepdims=True))
    expected = e / e.sum(1, keepdims=True)
    got = s.reshape(-1).copy()
    kernels._softmax8(got, n, groups, 8, n * 8)  # s[g, u, lane]
    np.testing.assert_allclose(got.reshape(s.shape), expected, rtol=2e-6, atol=1e-7)
    got = s.transpose(1, 0, 2).reshape(-1).copy()
    kernels._softmax8(got, n, groups, groups * 8, 8)  # s[u, g, lane]
    np.testing.assert_allclose(got.reshape(n, groups, 8).transpose(1, 0, 2), expected, rtol=2e-6, atol=1e-7)
