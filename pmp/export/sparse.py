"""Inference on an exported `.pmp` file with compiled sparse kernels (numba), no torch ops inside.

Why this shape: at deployment sizes (one sequence, or 64) the dense network spends its time in
torch's per-op dispatch and in streaming the 4 MB `fc` matrix; at 98% sparsity the pruned layers
are ~40k multiply-adds. So the whole forward pass is one compiled function over float32 numpy
arrays (see docs/deploy.md for the measurements that chose it):

- query/key/gc share their input, so they are one stacked CSR matrix (rows q|k|g) applied to a
  sample's node signals laid out (features, nodes): every kept weight is one axpy over the nodes;
- attention, softmax and the per-head mixing run per sample on that cache-resident tile;
- `fc` is CSR times the (features, batch) activations: a gather-dot per row at batch 1, an axpy
  over the batch per kept weight otherwise;
- BatchNorms are already a per-feature affine (folded at export); the attention scale 1/sqrt(d)
  is folded into the query rows here; dropout does not exist at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np
import torch
from torch import nn

from .format import CompactModel, ExportFormatError, SparseTensor, meta_model, read_compact

_JIT = dict(nogil=True, cache=True, fastmath=True, boundscheck=False)


@numba.njit(**_JIT)
def _spmm(ptr, idx, val, bias, x, out):  # pragma: no cover - compiled
    """out[i, :] = bias[i] + sum_k val[k] * x[idx[k], :] over row i's kept weights (CSR)."""
    n = x.shape[1]
    for i in range(ptr.shape[0] - 1):
        o = out[i]
        o[:] = bias[i]
        k, end = ptr[i], ptr[i + 1]
        while k + 4 <= end:  # four kept weights per pass: fewer loads/stores of the output row
            w0, w1, w2, w3 = val[k], val[k + 1], val[k + 2], val[k + 3]
            x0, x1, x2, x3 = x[idx[k]], x[idx[k + 1]], x[idx[k + 2]], x[idx[k + 3]]
            for c in range(n):
                o[c] += (w0 * x0[c] + w1 * x1[c]) + (w2 * x2[c] + w3 * x3[c])
            k += 4
        while k < end:
            w, xr = val[k], x[idx[k]]
            for c in range(n):
                o[c] += w * xr[c]
            k += 1


@numba.njit(**_JIT)
def _spmv(ptr, idx, val, bias, x, out):  # pragma: no cover - compiled
    """out[i] = bias[i] + sum_k val[k] * x[idx[k]]; four accumulators break the add latency chain."""
    for i in range(ptr.shape[0] - 1):
        a0 = a1 = a2 = a3 = np.float32(0.0)
        k, end = ptr[i], ptr[i + 1]
        while k + 4 <= end:
            a0 += val[k] * x[idx[k]]
            a1 += val[k + 1] * x[idx[k + 1]]
            a2 += val[k + 2] * x[idx[k + 2]]
            a3 += val[k + 3] * x[idx[k + 3]]
            k += 4
        while k < end:
            a0 += val[k] * x[idx[k]]
            k += 1
        out[i] = bias[i] + ((a0 + a1) + (a2 + a3))


@numba.njit(**_JIT)
def _linear(ptr, idx, val, bias, x):  # pragma: no cover - compiled
    """Sparse linear layer on (features, batch) activations -> (out_features, batch)."""
    out = np.empty((ptr.shape[0] - 1, x.shape[1]), np.float32)
    if x.shape[1] == 1:
        _spmv(ptr, idx, val, bias, x[:, 0], out[:, 0])
    else:
        _spmm(ptr, idx, val, bias, x, out)
    return out


@numba.njit(**_JIT)
def _node_signals(x, b, scale, shift, out):  # pragma: no cover - compiled
    """Sample b of x (B, T, V, C) as (T*C, V) node trajectories, through the input BatchNorm affine."""
    _, frames, nodes, chans = x.shape
    for t in range(frames):
        for v in range(nodes):
            for c in range(chans):
                d = t * chans + c
                out[d, v] = x[b, t, v, c] * scale[v, d] + shift[v, d]


@numba.njit(**_JIT)
def _attend(qkv, heads, adim, gdim, scale, shift, feats, b):  # pragma: no cover - compiled
    """Per head: softmax(q k^T) mixes the nodes' gc features; then the gc BatchNorm affine and ReLU
    write the sample's flattened (node, head, dim) features into column b of `feats`."""
    nodes = qkv.shape[1]
    s = np.empty((nodes, nodes), np.float32)
    ka, ga = heads * adim, 2 * heads * adim
    for h in range(heads):
        s[:, :] = 0
        for a in range(adim):
            q, k = qkv[h * adim + a], qkv[ka + h * adim + a]
            for v in range(nodes):
                qv = q[v]
                for u in range(nodes):
                    s[v, u] += qv * k[u]
        for v in range(nodes):
            m = s[v, 0]
            for u in range(1, nodes):
                m = max(m, s[v, u])
            tot = np.float32(0.0)
            for u in range(nodes):
                e = math.exp(s[v, u] - m)
                s[v, u] = e
                tot += e
            inv = np.float32(1.0) / tot
            for u in range(nodes):
                s[v, u] *= inv
        for v in range(nodes):
            for d in range(gdim):
                g = qkv[ga + h * gdim + d]
                acc = np.float32(0.0)
                for u in range(nodes):
                    acc += s[v, u] * g[u]
                j = (v * heads + h) * gdim + d
                feats[j, b] = max(acc * scale[j] + shift[j], np.float32(0.0))


@numba.njit(**_JIT)
def _agcn_forward(x, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale, gc_shift,
                  f_ptr, f_idx, f_val, f_bias, cls_w, cls_b):  # pragma: no cover - compiled
    batch, frames, nodes, chans = x.shape
    xs = np.empty((frames * chans, nodes), np.float32)
    qkv = np.empty((q_ptr.shape[0] - 1, nodes), np.float32)
    feats = np.empty((gc_scale.shape[0], batch), np.float32)
    for b in range(batch):
        _node_signals(x, b, in_scale, in_shift, xs)
        _spmm(q_ptr, q_idx, q_val, q_bias, xs, qkv)
        _attend(qkv, heads, adim, gdim, gc_scale, gc_shift, feats, b)
    hidden = np.maximum(_linear(f_ptr, f_idx, f_val, f_bias, feats), np.float32(0.0))
    return (cls_w @ hidden).T + cls_b


@numba.njit(**_JIT)
def _agcn_pruned_layers(nodes, q_ptr, q_idx, q_val, q_bias, feats, f_ptr, f_idx, f_val, f_bias):  # pragma: no cover
    """The pruned layers alone, as the forward pass runs them: stacked q|k|gc per sample, then fc."""
    out = np.empty((nodes.shape[0], q_ptr.shape[0] - 1, nodes.shape[2]), np.float32)
    for b in range(nodes.shape[0]):
        _spmm(q_ptr, q_idx, q_val, q_bias, nodes[b], out[b])
    return out, _linear(f_ptr, f_idx, f_val, f_bias, feats)


@dataclass(frozen=True)
class CSR:
    """Compressed sparse rows with unsigned column indices (no negative-index checks in the kernels)."""

    ptr: np.ndarray  # int64, rows + 1
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
        ptr = np.zeros(len(counts) + 1, np.int64)
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
        self.in_scale = d["data_bn.scale"].reshape(nodes, frames * chans)
        self.in_shift = d["data_bn.shift"].reshape(nodes, frames * chans)
        q = 1.0 / math.sqrt(self.adim)  # attention scale folded into the query rows
        self.qkv = CSR.stack([(compact.kept("query.weight"), q), (compact.kept("key.weight"), 1.0),
                              (compact.kept("gc.weight"), 1.0)])
        self.qkv_bias = np.concatenate([d["query.bias"] * np.float32(q), d["key.bias"], d["gc.bias"]])
        self.gc_scale, self.gc_shift = d["gc_bn.scale"], d["gc_bn.shift"]
        self.fc, self.fc_bias = CSR.stack([(compact.kept("fc.weight"), 1.0)]), d["fc.bias"]
        self.cls_w, self.cls_b = np.ascontiguousarray(d["classifier.weight"]), d["classifier.bias"]
        self.eval()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, classes) for x (B, T, V, C) float32."""
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(f"expected input (B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return np.empty((0, len(self.cls_b)), np.float32)
        return np.ascontiguousarray(_agcn_forward(
            x, self.in_scale, self.in_shift, *self.qkv.arrays, self.qkv_bias, self.heads, self.adim, self.gdim,
            self.gc_scale, self.gc_shift, *self.fc.arrays, self.fc_bias, self.cls_w, self.cls_b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().cpu().numpy()))

    def pruned_layers(self, nodes: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Only the sparse layers (for benchmarks): q|k|gc on node signals (B, T*C, V) and fc on
        features (V*heads*gc_dim, B), exactly as `run` calls them."""
        return _agcn_pruned_layers(nodes, *self.qkv.arrays, self.qkv_bias, feats, *self.fc.arrays, self.fc_bias)


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

