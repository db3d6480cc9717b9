"""Sparse inference for any registered model: pruned Linear/Conv1d/Conv2d on compiled CSR kernels,
everything else as the model's own dense torch ops.

Why a generic path next to the hand-tuned agcn runtime: a new backbone should deploy the day it is
registered. The model is rebuilt from the `.pmp` config and its own forward runs unchanged; only
modules are swapped:

- every Linear/Conv1d/Conv2d whose weight is stored sparse becomes a module holding the kept
  weights as CSR: Linear runs `_linear` from `_kernels.py` on (features, batch) activations; a
  convolution runs `_conv`, a "shifted CSR" product: a kept weight (o, c, i, j) is one value and
  one offset into the sample's (zero-padded) input, and output position p of channel o is
  sum_k val[k] * x[off[k] + pos(p)]. With stride 1 the positions of an output row are contiguous
  in the input, so each kept weight is one broadcast and fused multiply-adds on vectors of 8
  positions, the output built in registers (no im2col buffer, no dense product of zeros);
- every BatchNorm becomes the per-channel affine stored in the file (folded at export);
- every parameter-free `JointDistances` layer (pmp/models/layers.py) runs on a compiled kernel;
- inside an `nn.Sequential`, a sparse layer followed by that affine and a ReLU/LeakyReLU runs as
  one kernel (affine and activation in its epilogue), the fused modules left as identities.

Batches of more than one sample spread (sample, output channel) rows over numba's threads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import torch
from torch import nn

from pmp.models import create_model
from pmp.models.layers import JointDistances

from ._kernels import _JIT, BLOCK, _joint_distances, _linear
from ._simd import WIDTH, fma8, load8, max8, mul8, splat8, store8
from .format import CompactModel, SparseTensor

_SPARSE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: Multiply-adds of a call below which the conv kernel runs in the calling thread (starting the
#: thread pool costs more than it saves on small calls).
PARALLEL_MACS = 200_000


@numba.njit(inline="always", **_JIT)
def _store_lanes(ob, at, y, n, scratch):  # pragma: no cover - compiled
    """The first n (<= 8) lanes of y into ob[at:at + n]."""
    if n >= WIDTH:
        store8(ob, at, y)
    else:
        store8(scratch, 0, y)
        for lane in range(n):
            ob[at + lane] = scratch[lane]


@numba.njit(inline="always", **_JIT)
def _act8(a, vsc, vsh, vsl):  # pragma: no cover - compiled
    y = fma8(a, vsc, vsh)
    return max8(y, mul8(y, vsl))


@numba.njit(inline="always", **_JIT)
def _conv_scalar(k0, k1, off, val, scale, shift, slope, x, at, n, col_in, ob, dst):  # pragma: no cover
    """Positions dst..dst+n of `_conv_rows`, one at a time (strided rows; the input's last chunk)."""
    for q in range(n):
        acc = np.float32(0.0)
        for k in range(k0, k1):
            acc += val[k] * x[at + off[k] + q * col_in]
        y = acc * scale + shift
        ob[dst + q] = max(y, y * slope)


@numba.njit(**_JIT)
def _conv_rows(ptr, off, val, scale, shift, slope, x, stride, safe, t0, t1, nout, rows, width, row_in, col_in,
               out):  # pragma: no cover - compiled
    """Output rows t0..t1 (row t = channel t % nout of sample t // nout, flat in `out`):
    out[t, r*width + q] = act(scale[o] * sum_k val[k] * x[b*stride + off[k] + r*row_in + q*col_in]
    + shift[o]), act(y) = max(y, slope*y), over output channel o's kept weights k (CSR).

    Contiguous rows (col_in == 1) go in chunks of up to BLOCK positions, 1, 2 or 4 vector
    accumulators in registers per chunk; lanes past the row's end read the next positions and are
    not stored. A chunk starting past `safe` (its reads could run off the end of x) goes scalar.
    One call covers many rows: a call per row paid ~100 ns of reference counting on its arrays."""
    scratch = np.empty(WIDTH, np.float32)
    zero = splat8(np.float32(0.0))
    vsl = splat8(slope)
    for t in range(t0, t1):
        b, o = t // nout, t % nout
        dst0 = t * rows * width
        k0, k1 = ptr[o], ptr[o + 1]
        sc, sh = scale[o], shift[o]
        if k0 == k1:  # no kept weight (common at high rates): every output is act(shift)
            y = max(sh, sh * slope)
            for i in range(dst0, dst0 + rows * width):
                out[i] = y
            continue
        vsc, vsh = splat8(sc), splat8(sh)
        for r in range(rows):
            base, dst = b * stride + r * row_in, dst0 + r * width
            if col_in != 1:
                _conv_scalar(k0, k1, off, val, sc, sh, slope, x, base, width, col_in, out, dst)
                continue
            for q in range(0, width, BLOCK):
                n = min(BLOCK, width - q)
                if base + q > safe:
                    _conv_scalar(k0, k1, off, val, sc, sh, slope, x, base + q, n, 1, out, dst + q)
                    continue
                a0 = a1 = a2 = a3 = zero
                if n > 2 * WIDTH:
                    for k in range(k0, k1):
                        w, s = splat8(val[k]), base + off[k] + q
                        a0, a1 = fma8(w, load8(x, s), a0), fma8(w, load8(x, s + WIDTH), a1)
                        a2, a3 = fma8(w, load8(x, s + 2 * WIDTH), a2), fma8(w, load8(x, s + 3 * WIDTH), a3)
                elif n > WIDTH:
                    for k in range(k0, k1):
                        w, s = splat8(val[k]), base + off[k] + q
                        a0, a1 = fma8(w, load8(x, s), a0), fma8(w, load8(x, s + WIDTH), a1)
                else:
                    for k in range(k0, k1):
                        a0 = fma8(splat8(val[k]), load8(x, base + off[k] + q), a0)
                if n == BLOCK:  # a whole chunk: four stores, no lane bookkeeping
                    d = dst + q
                    store8(out, d, _act8(a0, vsc, vsh, vsl))
                    store8(out, d + WIDTH, _act8(a1, vsc, vsh, vsl))
                    store8(out, d + 2 * WIDTH, _act8(a2, vsc, vsh, vsl))
                    store8(out, d + 3 * WIDTH, _act8(a3, vsc, vsh, vsl))
                    continue
                for m, a in ((0, a0), (1, a1), (2, a2), (3, a3)):
                    if n > m * WIDTH:
                        _store_lanes(out, dst + q + m * WIDTH, _act8(a, vsc, vsh, vsl), n - m * WIDTH, scratch)


@numba.njit(parallel=True, **_JIT)
def _conv_parallel(ptr, off, val, scale, shift, slope, x, stride, safe, nb, nout, rows, width, row_in, col_in, out,
                   parts):  # pragma: no cover - compiled
    """`_conv_rows` over all nb * nout rows, one contiguous share per part (one part per thread)."""
    total = nb * nout
    for i in numba.prange(parts):
        _conv_rows(ptr, off, val, scale, shift, slope, x, stride, safe, i * total // parts, (i + 1) * total // parts,
                   nout, rows, width, row_in, col_in, out)


def _csr_rows(kept: SparseTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pointers (uint64), flat positions within a row (int64) and values of `kept`, rows = dim 0."""
    per_row = math.prod(kept.shape[1:])
    ptr = np.zeros(kept.shape[0] + 1, np.uint64)
    np.cumsum(np.bincount(kept.positions // per_row, minlength=kept.shape[0]), out=ptr[1:])
    return ptr, kept.positions % per_row, np.ascontiguousarray(kept.values, np.float32)


class _Epilogue(nn.Module):
    """Per-output affine (the layer's bias, then any fused BatchNorm) and activation slope."""

    def __init__(self, bias: np.ndarray | None, out_features: int):
        super().__init__()
        self.scale = np.ones(out_features, np.float32)
        self.shift = np.zeros(out_features, np.float32) if bias is None else np.asarray(bias, np.float32).copy()
        self.slope = np.float32(1.0)  # identity

    def fuse_affine(self, scale: np.ndarray, shift: np.ndarray) -> None:
        self.scale, self.shift = self.scale * scale, self.shift * scale + shift

    def fuse_activation(self, slope: float) -> None:
        self.slope = np.float32(slope)


class SparseLinear(_Epilogue):
    """A pruned nn.Linear: CSR times the (features, batch) activations (`_linear`)."""

    def __init__(self, kept: SparseTensor, bias: np.ndarray | None):
        super().__init__(bias, kept.shape[0])
        ptr, cols, self.val = _csr_rows(kept)
        self.ptr, self.idx = ptr, cols.astype(np.uint16 if kept.shape[1] <= 1 << 16 else np.uint32)
        self.in_features = kept.shape[1]
        self.zero = np.zeros(kept.shape[0], np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xs = x.reshape(-1, self.in_features).numpy()
        n = len(xs)
        cols = 1 if n == 1 else -(-n // BLOCK) * BLOCK  # _spmm needs whole blocks of columns
        xt = np.zeros((self.in_features, cols), np.float32)
        xt[:, :n] = xs.T
        out = np.empty((len(self.zero), cols), np.float32)
        _linear(self.ptr, self.idx, self.val, self.zero, xt, out)
        y = out[:, :n].T * self.scale + self.shift
        y = np.maximum(y, y * self.slope)
        return torch.from_numpy(np.ascontiguousarray(y)).reshape(*lead, -1)


class SparseConv(_Epilogue):
    """A pruned nn.Conv1d/Conv2d (any kernel, stride, padding, dilation, groups; zero padding)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, kept: SparseTensor, bias: np.ndarray | None):
        super().__init__(bias, kept.shape[0])
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"sparse conv: padding {conv.padding!r}/{conv.padding_mode!r} not supported "
                             "(numeric zero padding only)")
        two_d = isinstance(conv, nn.Conv2d)
        # A Conv1d is a Conv2d over (length, 1): one code path for both.
        self.kernel = tuple(conv.kernel_size) if two_d else (conv.kernel_size[0], 1)
        self.stride = tuple(conv.stride) if two_d else (conv.stride[0], 1)
        self.padding = tuple(conv.padding) if two_d else (conv.padding[0], 0)
        self.dilation = tuple(conv.dilation) if two_d else (conv.dilation[0], 1)
        self.two_d, self.groups, self.in_channels = two_d, conv.groups, conv.in_channels
        self.ptr, self._pos, self.val = _csr_rows(kept)
        self._plans: dict[tuple[int, ...], tuple] = {}

    def _plan(self, shape: tuple[int, ...]) -> tuple:
        """Everything a call on input `shape` (B, C, H, W) needs besides the data, cached per shape:
        a batch-1 call is a few microseconds of work, so recomputing this each call would dominate."""
        plan = self._plans.get(shape)
        if plan is None:
            b, c, h, w = shape
            (ph, pw), (sh, sw), (dh, dw), (kh, kw) = self.padding, self.stride, self.dilation, self.kernel
            hp, wp = h + 2 * ph, w + 2 * pw
            h_out, w_out = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
            if h_out < 1 or w_out < 1:
                raise ValueError(f"sparse conv: input {shape} is smaller than the kernel {self.kernel} "
                                 f"(padding {self.padding})")
            off = self._offsets(hp, wp)
            off_max = int(off.max()) if len(off) else 0
            if sh == 1 and sw == 1 and w_out == wp:  # the whole output map is contiguous in the input: one row
                rows, width, row_in, col_in = 1, h_out * w_out, 0, 1
            else:
                rows, width, row_in, col_in = h_out, w_out, sh * wp, sw
            n_in = b * c * hp * wp
            parallel = b > 1 and len(self.val) * b * h_out * w_out >= PARALLEL_MACS
            plan = self._plans[shape] = (hp, wp, h_out, w_out, off, n_in - BLOCK - off_max, rows, width, row_in,
                                         col_in, parallel)
        return plan

    def _offsets(self, hp: int, wp: int) -> np.ndarray:
        """Each kept weight's offset into a padded input of hp x wp positions per channel."""
        kh, kw = self.kernel
        per_group_in = self.in_channels // self.groups
        out_per_group = (len(self.ptr) - 1) // self.groups
        rows = np.repeat(np.arange(len(self.ptr) - 1), np.diff(self.ptr).astype(np.int64))
        c_local, rest = np.divmod(self._pos, kh * kw)
        i, j = np.divmod(rest, kw)
        c = rows // out_per_group * per_group_in + c_local
        return (c * hp * wp + i * self.dilation[0] * wp + j * self.dilation[1]).astype(np.int64)  # signed: int64 + uint64 is float64 in numba

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.two_d:
            x = x.unsqueeze(-1)
        b, c, h, w = x.shape
        hp, wp, h_out, w_out, offsets, safe, rows, width, row_in, col_in, parallel = self._plan((b, c, h, w))
        ph, pw = self.padding
        if ph or pw:
            xf = np.zeros((b, c, hp, wp), np.float32)
            xf[:, :, ph : ph + h, pw : pw + w] = x.numpy()
        else:
            xf = x.numpy() if x.is_contiguous() else np.ascontiguousarray(x.numpy())  # no copy for a contiguous input
        xf = xf.reshape(-1)
        nout = len(self.ptr) - 1
        out = np.empty(b * nout * h_out * w_out, np.float32)
        common = (self.ptr, offsets, self.val, self.scale, self.shift, self.slope, xf, c * hp * wp, safe)
        if parallel:
            _conv_parallel(*common, b, nout, rows, width, row_in, col_in, out, numba.get_num_threads())
        else:
            _conv_rows(*common, 0, b * nout, nout, rows, width, row_in, col_in, out)
        y = torch.from_numpy(out).view(b, nout, h_out, w_out)
        return y if self.two_d else y.view(b, nout, h_out)


class Affine(nn.Module):
    """An eval-mode BatchNorm as stored in the file: y = x * scale + shift over dim 1."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray):
        super().__init__()
        self.scale_np, self.shift_np = scale, shift
        self.scale, self.shift = torch.from_numpy(scale), torch.from_numpy(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(self.shift.view(view), x, self.scale.view(view))


class CompiledJointDistances(nn.Module):
    """`JointDistances` on `_joint_distances`: the same values to float32 rounding, in one pass."""

    def __init__(self, layer: JointDistances):
        super().__init__()
        self.first, self.second = layer.joint_pairs()

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        out = np.empty((p.shape[0], len(self.first), p.shape[1]), np.float32)
        _joint_distances(p.numpy(), self.first, self.second, out)
        return torch.from_numpy(out)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _fuse(model: nn.Module) -> None:
    """In every nn.Sequential: sparse layer -> Affine -> ReLU/LeakyReLU into the layer's epilogue."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = list(seq._modules.items())
        for i, (_, mod) in enumerate(items):
            if not isinstance(mod, _Epilogue) or mod.slope != 1.0:
                continue
            j = i + 1
            if j < len(items) and isinstance(items[j][1], Affine):
                mod.fuse_affine(items[j][1].scale_np, items[j][1].shift_np)
                seq._modules[items[j][0]] = nn.Identity()
                j += 1
            if j < len(items) and type(items[j][1]) in (nn.ReLU, nn.LeakyReLU):
                act = items[j][1]
                mod.fuse_activation(0.0 if isinstance(act, nn.ReLU) else act.negative_slope)
                seq._modules[items[j][0]] = nn.Identity()


class SparseGeneric(nn.Module):
    """Inference-only module for any registered model, from a validated `.pmp` file."""

    def __init__(self, compact: CompactModel):
        super().__init__()
        self.spec, self.path = compact.spec, compact.path
        self.file_bytes = compact.path.stat().st_size
        kw = compact.spec["kwargs"]
        self.input_shape = (int(kw["in_frames"]), int(kw["num_nodes"]), int(kw["in_channels"]))
        with torch.random.fork_rng():  # the init is overwritten below; the caller's RNG stays as it was
            model = create_model(compact.spec["model"], **kw).eval()
        swapped: set[str] = set()
        for name, mod in list(model.named_modules()):
            prefix = f"{name}." if name else ""
            if isinstance(mod, JointDistances):
                _set_module(model, name, CompiledJointDistances(mod))
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                _set_module(model, name, Affine(compact.dense[prefix + "scale"], compact.dense[prefix + "shift"]))
            elif isinstance(mod, _SPARSE_TYPES) and prefix + "weight" in compact.sparse:
                bias = compact.dense.get(prefix + "bias") if mod.bias is not None else None
                kept = compact.sparse[prefix + "weight"]
                _set_module(model, name, SparseLinear(kept, bias) if isinstance(mod, nn.Linear)
                            else SparseConv(mod, kept, bias))
                swapped.add(name)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.from_numpy(compact.dense[name] if name in compact.dense else compact.sparse[name].dense()))
        for p in model.parameters():
            p.requires_grad_(False)
        _fuse(model)
        self.sparse_layers = sorted(swapped)
        # kept out of the module tree: its tensors are constants, not parameters to train or track
        self.__dict__["model"] = model
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().float()
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape or not len(x):
            raise ValueError(f"expected input (B>=1, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        with torch.inference_mode():
            return self.model(x.contiguous()).clone()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, classes) for x (B, T, V, C) float32 numpy."""
        return self.forward(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def load_generic(path: str | Path) -> SparseGeneric:
    """`SparseGeneric` for a `.pmp` file (validated first)."""
    from .format import read_compact

    return SparseGeneric(read_compact(path))
