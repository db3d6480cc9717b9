"""Where the sparse runtime's time goes (default agcn, r = 0.98, random weights pruned by magnitude).

- batch 64: the stages of one batch-lane tile (32 samples) as one thread runs them (layout
  transpose, q|k|gc, attention, fc + classifier, the whole tile), and the whole call with numba's
  default threads (one tile per thread); the attention's rate in vector fused multiply-adds per
  second against this core's peak (a register-only loop of 12 independent FMA chains);
- batch 1: the q|k|gc product, fc's gather-dot (ns per kept weight), the cost of a bare call
  from Python into compiled code with the same arguments, and fc by the libraries' sparse
  products (torch CSR, scipy CSR) and by torch dense, the alternatives the runtime was chosen
  against;
- cold start: a fresh process with an empty numba cache loading a `.pmp` file and making its
  first calls (batches 1, 20, 64: every kernel compiles), then a second process on that cache.

Stages are timed in alternating blocks of 10 calls (first of each not timed), medians, in three
separate rounds (all kept in the file; the headline figure is the median over the rounds).

    python benchmarks/sparse_parts.py      # writes benchmarks/results/sparse_parts.json (~1 min)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numba
import numpy as np
import scipy.sparse
import torch

from pmp.export import _kernels as K
from pmp.export import sparse as S
from pmp.export._simd import add8, fma8, load8, splat8, store8
from pmp.export.bench import AGCN_DEFAULT, _alternating_times, _machine, magnitude_prune, with_random_batchnorm
from pmp.export.format import save_compact
from pmp.models import create_model

OUT = Path(__file__).parent / "results" / "sparse_parts.json"
RATE = 0.98


@numba.njit(fastmath=True)
def _fma_peak(n, x):  # pragma: no cover - compiled
    y, z = load8(x, 0), load8(x, 8)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = splat8(np.float32(0))
    for _ in range(n):
        a0, a1, a2, a3 = fma8(y, z, a0), fma8(y, z, a1), fma8(y, z, a2), fma8(y, z, a3)
        a4, a5, a6, a7 = fma8(y, z, a4), fma8(y, z, a5), fma8(y, z, a6), fma8(y, z, a7)
        a8, a9, a10, a11 = fma8(y, z, a8), fma8(y, z, a9), fma8(y, z, a10), fma8(y, z, a11)
    s = add8(add8(add8(a0, a1), add8(a2, a3)), add8(add8(a4, a5), add8(a6, a7)))
    store8(x, 16, add8(s, add8(add8(a8, a9), add8(a10, a11))))


@numba.njit
def _attention(qkv, lanes, nodes, heads, adim, gdim, scale, shift, feats):  # pragma: no cover - compiled
    """Every head's attention for one batch-lane tile, as `_lane_features` runs it."""
    probs = np.empty(nodes * nodes * 8, np.float32)
    unit = np.array([1.0, 0.0], np.float32)
    for h in range(heads):
        S._attend_lanes(qkv, h, lanes // 8, nodes, heads, adim, gdim, scale, shift, feats, 0, probs, unit)


@numba.njit
def _bare(*args):  # pragma: no cover - compiled
    return 0


def fma_peak() -> float:
    """Vector FMAs per second, one thread, median of 5."""
    x = np.full(32, 1e-3, np.float32)
    n = 20_000_000
    _fma_peak(10, x)
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        _fma_peak(n, x)
        rates.append(12 * n / (time.perf_counter() - t0))
    return float(np.median(rates))


_FIRST_CALLS = """
import sys, time
import numpy as np
t0 = time.perf_counter()
from pmp.export import load_sparse
module = load_sparse(sys.argv[1])
t1 = time.perf_counter()
for batch in (1, 20, 64):
    module.run(np.zeros((batch, *module.input_shape), np.float32))
print(t1 - t0, time.perf_counter() - t1)
"""


def cold_start(path: Path) -> dict[str, float]:
    """Seconds to import + load, and to make the first calls, in a process with an empty numba
    cache (everything compiles), then in a second process on that cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [subprocess.run([sys.executable, "-c", _FIRST_CALLS, str(path)], env=env, check=True,
                               capture_output=True, text=True).stdout.split() for _ in range(2)]
    (load0, calls0), (load1, calls1) = ([round(float(v), 2) for v in r] for r in runs)
    return {"empty_cache_import_load_s": load0, "empty_cache_first_calls_s": calls0,
            "cached_import_load_s": load1, "cached_first_calls_s": calls1}


def _median_us(fns: dict, repeats: int = 300, rounds: int = 3) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Medians (us) per function in each of `rounds` separate measurements, and the median over
    the rounds (this VM has slow phases lasting seconds: the rounds show them)."""
    per_round = [{k: round(float(np.median(v)), 2) for k, v in _alternating_times(fns, repeats, block=10).items()}
                 for _ in range(rounds)]
    return {k: round(float(np.median([r[k] for r in per_round])), 2) for k in fns}, per_round


def main() -> None:
    start = time.perf_counter()
    torch.manual_seed(0)
    model = with_random_batchnorm(create_model("agcn", **AGCN_DEFAULT).eval())
    masks = magnitude_prune(model, RATE)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_compact(model, {"model": "agcn", "kwargs": AGCN_DEFAULT}, masks, Path(tmp) / "m.pmp")
        mod = S.load_sparse(path)
        cold = cold_start(path)
    frames, nodes, chans = mod.input_shape
    heads, adim, gdim = mod.heads, mod.adim, mod.gdim
    rng = np.random.default_rng(0)
    result: dict = {"rate": RATE, "qkv_kept": int(mod.qkv.val.size), "fc_kept": int(mod.fc.val.size)}

    # batch 64: one batch-lane tile's stages, as one thread runs them, and the whole threaded call
    x = rng.normal(size=(64, frames, nodes, chans)).astype(np.float32)
    lanes = S.LANE_TILE
    xs = np.zeros((frames * chans, S._lane_width(nodes, lanes)), np.float32)
    qkv = np.empty((len(mod.qkv_bias), xs.shape[1]), np.float32)
    feats = np.zeros((len(mod.gc_scale), lanes), np.float32)
    S._node_signals_lanes(x, 0, lanes, mod.in_scale, mod.in_shift, xs)
    K._spmm(*mod._qkv, xs, qkv)
    weights = (*mod._front, *mod._fc, *mod.cls.arrays, mod.cls_wt, mod.cls_b)
    logits = np.empty((lanes, len(mod.cls_b)), np.float32)
    stages, result["batch64_us_rounds"] = _median_us({
        "tile_layout_transpose": lambda: S._node_signals_lanes(x, 0, lanes, mod.in_scale, mod.in_shift, xs),
        "tile_qkv": lambda: K._spmm(*mod._qkv, xs, qkv),
        "tile_attention": lambda: _attention(qkv, lanes, nodes, heads, adim, gdim, mod.gc_scale, mod.gc_shift, feats),
        "tile_fc_classifier": lambda: S._agcn_head(feats, lanes, *mod._fc, *mod.cls.arrays, mod.cls_wt, mod.cls_b),
        "tile_whole": lambda: S._tile_forward(x, 0, lanes, True, *weights, logits),
        "whole_call": lambda: mod.run(x),
    })
    # scores and mixing: per head and 8-sample chunk, 2 products of V x V x d, 8 lanes per vector FMA
    attn_fmas = heads * (lanes // 8) * (nodes * nodes * adim + gdim * nodes * nodes)
    peak = fma_peak()
    result["batch64_us"] = stages
    result["tile_samples"] = lanes
    result["tile_stage_share"] = {k: round(v / stages["tile_whole"], 3) for k, v in stages.items()
                                  if k.startswith("tile_") and k != "tile_whole"}
    result["tile_attention_vector_fmas"] = attn_fmas
    result["attention_gfma_per_s_one_thread"] = round(attn_fmas / stages["tile_attention"] / 1e3, 2)
    result["peak_gfma_per_s_one_thread"] = round(peak / 1e9, 2)
    result["attention_share_of_peak"] = round(attn_fmas / (stages["tile_attention"] * 1e-6) / peak, 3)

    # batch 1
    x1 = x[:1].copy()
    tiles, feats1 = mod.layer_inputs(x1)  # one tile each
    q1 = np.empty((1, len(mod.qkv_bias), tiles.shape[2]), np.float32)
    out1 = np.empty((1, len(mod.fc_bias), 1), np.float32)
    args = (tiles, 0, *mod._qkv, feats1, *mod._fc, q1, out1)  # as `pruned_layers` calls `_tile_layers`
    _bare(*args)
    w = model.fc.weight.detach()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        w_csr = w.to_sparse_csr()
    w_scipy, f_t = scipy.sparse.csr_matrix(w.numpy()), torch.from_numpy(feats1[0])
    with torch.inference_mode():  # one alternating group: these figures are comparable
        b1, result["batch1_us_rounds"] = _median_us({
            "qkv": lambda: K._spmm(*mod._qkv, tiles[0], q1[0]),
            "fc": lambda: K._linear(*mod._fc, feats1[0], out1[0]),
            "bare_call_same_arguments": lambda: _bare(*args),
            "pruned_layers": lambda: mod.pruned_layers(tiles, feats1),
            "whole_call": lambda: mod.run(x1),
            "fc_torch_csr": lambda: torch.addmm(model.fc.bias[:, None], w_csr, f_t),
            "fc_scipy_csr": lambda: w_scipy @ feats1[0] + mod.fc_bias[:, None],
            "fc_torch_dense": lambda: torch.addmm(model.fc.bias[:, None], w, f_t),
        }, repeats=1000)
    result["batch1_us"] = b1
    result["batch1_fc_ns_per_kept_weight"] = round(b1["fc"] * 1e3 / mod.fc.val.size, 3)
    result.update(cold_start=cold, machine=_machine(), wall_s=round(time.perf_counter() - start, 1))
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
