"""Inference on an exported `.pmp` file with compiled kernels (numba), no torch ops inside.

Why this shape: at deployment sizes (one sequence, or 64) the dense network's time goes to torch's
per-op dispatch, to streaming the 4 MB `fc` matrix, and to many small attention ops; at 98%
sparsity the pruned layers are ~40k multiply-adds. So the forward pass is two compiled calls over
float32 numpy arrays (docs/deploy.md has the measurements behind each piece; the generic products
are in `_kernels.py`):

- query/key/gc share their input, so they are one stacked CSR matrix (rows q|k|gc) applied to a
  tile of node signals (`_spmm`);
- attention, softmax and the per-head mixing run on that tile as register-blocked products on
  8-lane vectors, in one of two layouts: below BATCH_LANES samples, per sample with the attending
  nodes as the lanes (tiles of GROUP samples x nodes); from BATCH_LANES samples on, with the
  samples as the lanes (tiles of LANE_TILE samples, or half, columns ordered chunk of 8 samples,
  node, sample), which needs no padding of the node count;
- `fc` is CSR times the (features, batch) activations: a gather-dot per row for one sample, `_spmm`
  otherwise; the classifier follows (dense or CSR);
- BatchNorms are already per-feature affines (folded at export), the attention scale 1/sqrt(d) is
  folded into the query rows here, and dropout does not exist at inference.

Batches of more than one tile spread their tiles over numba's threads (numba.set_num_threads), each
tile run start to end (fc and classifier included) by one thread.
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

from ._kernels import _JIT, _ZERO, BLOCK, _gemm_lanes, _dense_matmul, _linear, _relu, _softmax8, _spmm
from ._simd import WIDTH
from .format import CompactModel, SparseTensor, meta_model, read_compact
from .generic import SparseGeneric

#: Batches of this many samples or more run in the batch-lane layout (the samples as vector lanes);
#: smaller ones in node lanes. fc's input is padded to a multiple of BLOCK samples.
BATCH_LANES = 32
#: Samples whose node signals go through the stacked q|k|gc matrix together in node lanes (one
#: tile, also the unit of multi-threading there).
GROUP = 16
#: Samples per batch-lane tile (4 chunks of 8 lanes); each tile runs start to end in one thread.
LANE_TILE = 32


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
    sample's node vectors (ceil(V / 8) of them) stay inside the tile, rounded up to whole BLOCKs
    (for `_spmm`)."""
    return -(-(group * nodes + -(-nodes // WIDTH) * WIDTH - nodes) // BLOCK) * BLOCK


@numba.njit(**_JIT)
def _node_features(x, b0, count, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale, gc_shift,
                   xs, feats):  # pragma: no cover - compiled
    """Everything before fc for samples b0..b0+count of x in the node-lane layout, in the calling
    thread: node signals into the tile xs, q|k|gc, attention -> feats (column = sample - b0)."""
    nodes = x.shape[2]
    row = -(-nodes // WIDTH) * WIDTH
    qkv = np.empty((q_ptr.shape[0] - 1, xs.shape[1]), np.float32)
    probs, mix = np.empty((nodes, row), np.float32), np.empty((gdim, row), np.float32)
    unit = np.array([1.0, 0.0], np.float32)
    _node_signals(x, b0, count, in_scale, in_shift, xs)
    _spmm(q_ptr, q_idx, q_val, q_bias, xs, qkv)
    for g in range(count):
        _attend(qkv, g * nodes, heads, adim, gdim, gc_scale, gc_shift, feats, g, probs, mix, unit)


@numba.njit(**_JIT)
def _node_signals_lanes(x, b0, count, scale, shift, out):  # pragma: no cover - compiled
    """Samples b0..b0+count of x as node trajectories, the samples as lanes in
    chunks of WIDTH: out[t*C + c, (s // WIDTH) V WIDTH + v WIDTH + s % WIDTH] (lanes past `count` are
    left as they are). A transpose, one chunk at a time: WIDTH sequential read streams and
    contiguous writes."""
    _, frames, nodes, chans = x.shape
    for g in range(0, count, WIDTH):
        n = min(WIDTH, count - g)
        for t in range(frames):
            for v in range(nodes):
                col = g * nodes + v * WIDTH
                for c in range(chans):
                    d = t * chans + c
                    sc, sh, row = scale[d, v], shift[d, v], out[d]
                    for k in range(n):
                        row[col + k] = x[b0 + g + k, t, v, c] * sc + sh


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


@numba.njit(**_JIT)
def _lane_width(nodes, lanes):  # pragma: no cover - compiled
    """Columns of a batch-lane tile: nodes x lanes, padded to whole BLOCKs (for `_spmm`)."""
    return -(-nodes * lanes // BLOCK) * BLOCK


@numba.njit(**_JIT)
def _lane_features(x, b0, count, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale, gc_shift,
                   xs, feats):  # pragma: no cover - compiled
    """Everything before fc for samples b0..b0+count of x in the batch-lane layout, in the calling
    thread: node signals into the tile xs, q|k|gc, every head's attention -> feats (column =
    sample - b0; xs and feats zeroed by the caller, so that padding lanes stay finite)."""
    nodes = x.shape[2]
    qkv = np.empty((q_ptr.shape[0] - 1, xs.shape[1]), np.float32)
    probs = np.empty(nodes * nodes * WIDTH, np.float32)
    unit = np.array([1.0, 0.0], np.float32)
    _node_signals_lanes(x, b0, count, in_scale, in_shift, xs)
    _spmm(q_ptr, q_idx, q_val, q_bias, xs, qkv)
    for h in range(heads):
        _attend_lanes(qkv, h, -(-count // WIDTH), nodes, heads, adim, gdim, gc_scale, gc_shift, feats, 0, probs, unit)


@numba.njit(**_JIT)
def _agcn_head(feats, batch, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val, cls_wt, cls_b):  # pragma: no cover
    """fc, ReLU and the classifier -> (batch, classes) logits, for one tile's feats (one column per
    sample, padded). One column: the classifier densely, its lanes the classes (cls_wt = its
    weight transposed, zeros included); several: CSR over the (padded) batch lanes. No BLAS call: its
    own thread pool would fight numba's for the same cores."""
    hidden = np.empty((f_ptr.shape[0] - 1, feats.shape[1]), np.float32)
    _linear(f_ptr, f_idx, f_val, f_bias, feats, hidden)
    hidden = np.maximum(hidden, _ZERO)
    if feats.shape[1] == 1:
        logits = np.empty((1, cls_b.shape[0]), np.float32)
        _dense_matmul(hidden.T, cls_wt, logits)
        return logits + cls_b
    logits_t = np.empty((cls_b.shape[0], feats.shape[1]), np.float32)
    _spmm(c_ptr, c_idx, c_val, cls_b, hidden, logits_t)
    return np.ascontiguousarray(logits_t[:, :batch].T)


@numba.njit(**_JIT)
def _tile_shape(nodes, lanes, lane_layout):  # pragma: no cover - compiled
    """(columns of the q|k|gc tile, columns of fc's input) for a tile of `lanes` samples."""
    cols = _lane_width(nodes, lanes) if lane_layout else _tile_width(lanes, nodes)
    return cols, 1 if lanes == 1 else -(-lanes // BLOCK) * BLOCK


@numba.njit(**_JIT)
def _tile_features(x, b0, count, lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim,
                   gc_scale, gc_shift, xs, feats):  # pragma: no cover - compiled
    """`_lane_features` or `_node_features`, by the tile's layout."""
    if lane_layout:
        _lane_features(x, b0, count, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                       gc_shift, xs, feats)
    else:
        _node_features(x, b0, count, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                       gc_shift, xs, feats)


@numba.njit(**_JIT)
def _tile_forward(x, t, lanes, lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim,
                  gc_scale, gc_shift, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val, cls_wt, cls_b,
                  logits):  # pragma: no cover - compiled
    """Tile t (samples t*lanes..) start to end in the calling thread: features, fc, classifier ->
    its rows of logits."""
    b0 = t * lanes
    count = min(lanes, x.shape[0] - b0)
    cols, fw = _tile_shape(x.shape[2], lanes, lane_layout)
    xs = np.zeros((in_scale.shape[0], cols), np.float32)
    feats = np.zeros((gc_scale.shape[0], fw), np.float32)
    _tile_features(x, b0, count, lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim,
                   gc_scale, gc_shift, xs, feats)
    logits[b0:b0 + count] = _agcn_head(feats, count, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val, cls_wt, cls_b)


@numba.njit(parallel=True, **_JIT)
def _forward_parallel(x, lanes, lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim,
                      gc_scale, gc_shift, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val, cls_wt, cls_b,
                      logits):  # pragma: no cover - compiled
    """`_tile_forward` for every tile, tiles over numba's threads: one parallel region per call and
    no data handed between threads (threading the stages one by one instead lost about a quarter
    of a batch-64 call to the hand-overs: docs/deploy.md)."""
    for t in numba.prange(-(-x.shape[0] // lanes)):
        _tile_forward(x, t, lanes, lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim,
                      gc_scale, gc_shift, f_ptr, f_idx, f_val, f_bias, c_ptr, c_idx, c_val, cls_wt, cls_b, logits)


@numba.njit(**_JIT)
def _tile_inputs(x, lanes, lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias, heads, adim, gdim, gc_scale,
                 gc_shift):  # pragma: no cover - compiled
    """Per tile, what its pruned layers receive (benchmarks): the node-signal tile and fc's input."""
    batch = x.shape[0]
    n = -(-batch // lanes)
    cols, fw = _tile_shape(x.shape[2], lanes, lane_layout)
    tiles = np.zeros((n, in_scale.shape[0], cols), np.float32)
    feats = np.zeros((n, gc_scale.shape[0], fw), np.float32)
    for t in range(n):
        b0 = t * lanes
        _tile_features(x, b0, min(lanes, batch - b0), lane_layout, in_scale, in_shift, q_ptr, q_idx, q_val, q_bias,
                       heads, adim, gdim, gc_scale, gc_shift, tiles[t], feats[t])
    return tiles, feats


@numba.njit(**_JIT)
def _tile_layers(tiles, t, q_ptr, q_idx, q_val, q_bias, feats, f_ptr, f_idx, f_val, f_bias, qkv,
                 out):  # pragma: no cover - compiled
    """Tile t's pruned layers alone, as `_tile_forward` runs them: q|k|gc, then fc."""
    _spmm(q_ptr, q_idx, q_val, q_bias, tiles[t], qkv[t])
    _linear(f_ptr, f_idx, f_val, f_bias, feats[t], out[t])


@numba.njit(parallel=True, **_JIT)
def _layers_parallel(tiles, q_ptr, q_idx, q_val, q_bias, feats, f_ptr, f_idx, f_val, f_bias, qkv,
                     out):  # pragma: no cover - compiled
    """`_tile_layers` for every tile, tiles over numba's threads as in `_forward_parallel`."""
    for t in numba.prange(tiles.shape[0]):
        _tile_layers(tiles, t, q_ptr, q_idx, q_val, q_bias, feats, f_ptr, f_idx, f_val, f_bias, qkv, out)


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

    @staticmethod
    def supports(spec: dict) -> bool:
        """The kernels cover the one-block network over whole trajectories (the default); deeper or
        `temporal` ones run on the generic runtime."""
        kw = spec["kwargs"]
        return int(kw.get("blocks", 1)) == 1 and not int(kw.get("temporal", 0))

    @staticmethod
    def _tiles(batch: int) -> tuple[int, bool]:
        """(samples per tile, batch-lane layout?): node lanes up to GROUP samples a tile below
        BATCH_LANES; batch lanes of LANE_TILE, or half of it while that leaves a thread idle."""
        if batch < BATCH_LANES:
            return min(batch, GROUP), False
        return (LANE_TILE if batch >= numba.get_num_threads() * LANE_TILE else LANE_TILE // 2), True

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape or not len(x):
            raise ValueError(f"expected input (B>=1, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        return x

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, classes) for x (B, T, V, C) float32. One tile runs in the calling thread
        (starting the thread pool costs more than it saves there), several over the threads."""
        x = self._checked(x)
        lanes, lane_layout = self._tiles(len(x))
        logits = np.empty((len(x), len(self.cls_b)), np.float32)
        weights = (*self._front, *self._fc, *self.cls.arrays, self.cls_wt, self.cls_b)
        if len(x) <= lanes:
            _tile_forward(x, 0, lanes, lane_layout, *weights, logits)
        else:
            _forward_parallel(x, lanes, lane_layout, *weights, logits)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().cpu().numpy()))

    def layer_inputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the pruned layers receive for input x, per tile, in this runtime's layouts
        (benchmarks): the q|k|gc tiles and fc's inputs."""
        x = self._checked(x)
        return _tile_inputs(x, *self._tiles(len(x)), *self._front)

    def pruned_layers(self, tiles: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Only the sparse layers, on `layer_inputs(x)`, threaded as `run` threads them: q|k|gc and
        fc per tile."""
        qkv = np.empty((len(tiles), len(self.qkv_bias), tiles.shape[2]), np.float32)
        out = np.empty((len(tiles), len(self.fc_bias), feats.shape[2]), np.float32)
        if len(tiles) == 1:
            _tile_layers(tiles, 0, *self._qkv, feats, *self._fc, qkv, out)
        else:
            _layers_parallel(tiles, *self._qkv, feats, *self._fc, qkv, out)
        return qkv, out


#: Hand-tuned sparse runtimes by model name (the `model` field of the config), each with a
#: `supports(spec)`; every other model or variant runs on the generic one (pmp/export/generic.py).
RUNTIMES: dict[str, Callable[[CompactModel], nn.Module]] = {"agcn": SparseAttentionGCN}


def load_sparse(path: str | Path, generic: bool = False) -> nn.Module:
    """The inference module for a `.pmp` file, validated first (ExportFormatError otherwise): the
    model's hand-tuned runtime if it has one (unless `generic`), else the generic one."""
    compact = read_compact(path)
    runtime = None if generic else RUNTIMES.get(compact.spec["model"])
    if runtime is not None and not runtime.supports(compact.spec):
        runtime = None  # a variant the hand-tuned kernels do not cover
    return (runtime or SparseGeneric)(compact)


def predict(module: nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits for a batch (B, T, V, C) or one sequence (T, V, C); works on dense modules too."""
    t = torch.as_tensor(x, dtype=torch.float32)
    single = t.dim() == 3
    with torch.no_grad():
        out = module(t[None] if single else t)
    return (out[0] if single else out).numpy()

