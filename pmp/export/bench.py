"""Dense torch, dense ONNX Runtime and the sparse runtime on this CPU: latency (whole network,
pruned layers alone) and file size. Timings alternate the implementations in blocks of calls, so
all see the same machine load on a shared box, and report medians; a second pass alternates call
by call (`interleaved`). ONNX Runtime is the bar a deployer would use for the dense network."""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pmp.machine import machine_fingerprint
from pmp.models import create_model
from pmp.pruning.masks import topk_masks
from pmp.pruning.targets import get_module, select_targets

from .format import index_sizes, save_compact
from .onnx import ort_session, to_onnx
from .sparse import load_sparse

#: Calls in a row per implementation in the steady-state timing (the first of each is not timed).
BLOCK_CALLS = 10

#: The deployment-size model of the benchmark: configs/fpha.yaml's (hands: 21 joints, 45 classes;
#: 8 temporal chunks of 3 + 21 + 3 + 1 feature channels: position, distances, bone, angle).
AGCN_DEFAULT: dict[str, Any] = dict(num_nodes=21, in_frames=8, in_channels=28, num_classes=45, heads=8, attn_dim=16,
                                    gc_dim=16, hidden=384)
NOTE = ("Random-init weights (BatchNorm statistics drawn at random) pruned by magnitude, per layer: latency "
        "depends on the sparsity pattern's size, not on what the weights learned, so no training is needed to "
        "measure it. File sizes of trained runs: benchmarks/export_size.py.")


def magnitude_prune(model: nn.Module, rate: float, exclude_last: bool = True) -> dict[str, torch.Tensor]:
    """Zero the smallest |w| of each prunable tensor in place (exactly round(rate * N) each) and
    return the masks: a finalised pruned model, as a training run leaves it. `exclude_last=False`
    prunes the classifier too (`pruning.exclude_last: false` in a config)."""
    params = {t.name: model.get_parameter(t.name) for t in select_targets(model, exclude_last=exclude_last)}
    masks = topk_masks({k: p.detach().abs() for k, p in params.items()}, rate, "layer")
    with torch.no_grad():
        for k, p in params.items():
            p.mul_(masks[k])
    return masks


def with_random_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm trained-looking statistics and affine: a fresh model's are exactly 0/1,
    which the lossless codec would compress to nothing and so overstate the file-size ratio."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return model


def _layer_inputs(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """What each of `layers` receives when `model` runs on x (captured by forward hooks)."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, inp[0].detach()))
             for i, m in enumerate(layers)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(layers))]


def _alternating_times(fns: dict[str, Callable[[], Any]], repeats: int, block: int,
                       warmup: int = 5) -> dict[str, np.ndarray]:
    """Wall times (us) of `repeats` calls of each function, the functions taking turns in blocks of
    `block` calls in a row. With block > 1 the first call of each block is not recorded: it pays
    for the switch (caches and thread pools just used by the other runtime), the rest run as a
    deployed model runs, call after call. With block = 1 every call is recorded: each one follows
    the other implementations' calls."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    skip = 1 if block > 1 else 0
    times: dict[str, list[float]] = {k: [] for k in fns}
    while len(next(iter(times.values()))) < repeats:
        for k, f in fns.items():
            for i in range(block):
                t0 = time.perf_counter_ns()
                f()
                if i >= skip:
                    times[k].append((time.perf_counter_ns() - t0) / 1e3)
    return {k: np.asarray(v[:repeats]) for k, v in times.items()}


def _check_timing(repeats: int, block: int) -> None:
    if repeats < 1 or block < 1:
        raise ValueError(f"--repeats and --block must be at least 1, got {repeats} and {block}")


def _speedups(times: dict[str, np.ndarray]) -> dict[str, Any]:
    """Medians (us), speedups (dense / sparse) and the unpruned operations' share of each network."""
    t = {k: float(np.median(v)) for k, v in times.items()}
    ort = {"ort_model_speedup": round(t["ort_model"] / t["sparse_model"], 2)} if "ort_model" in t else {}
    return {
        **{f"{k}_us": round(v, 1) for k, v in t.items()},
        "layers_speedup": round(t["dense_layers"] / t["sparse_layers"], 2),
        "model_speedup": round(t["dense_model"] / t["sparse_model"], 2),
        **ort,
        "dense_unpruned_share": round(max(0.0, 1 - t["dense_layers"] / t["dense_model"]), 3),
        "sparse_unpruned_share": round(max(0.0, 1 - t["sparse_layers"] / t["sparse_model"]), 3),
    }


def _dense_bytes(model: nn.Module) -> int:
    """Size of the model's state_dict as a safetensors file (what a run's model.safetensors is)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return path.stat().st_size


def bench_inference(
    model_dense: nn.Module,
    sparse_module: nn.Module,
    batch_sizes: Iterable[int] = (1, 64),
    repeats: int = 200,
    seed: int = 0,
    block: int = BLOCK_CALLS,
    ort: Any | None = None,
) -> dict[str, Any]:
    """Latency of the masked dense model (torch) vs `sparse_module` (from `load_sparse`), whole
    network and pruned layers alone, medians of `repeats`; plus the unpruned operations' share of
    each network's time and the two file sizes. Speedup = dense time / sparse time. With `ort`
    (an ONNX Runtime session of the same masked dense model, `ort_session`), its whole-network time
    too, `ort_model_us`, and `ort_model_speedup` = ONNX Runtime time / sparse time.

    The headline figures time each implementation in its steady state, in alternating blocks of
    `block` calls (both see the same machine load); `interleaved` repeats the measurement with
    every call right after the other implementation's, the worst case for both (docs/deploy.md
    discusses the difference)."""
    _check_timing(repeats, block)
    model_dense = model_dense.eval()
    layers = [get_module(model_dense, t.module_name) for t in select_targets(model_dense)]
    frames, nodes, chans = sparse_module.input_shape
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for b in batch_sizes:
        x = torch.randn(b, frames, nodes, chans, generator=gen)
        dense_in = _layer_inputs(model_dense, layers, x)
        sparse_in = sparse_module.layer_inputs(x.numpy())
        fns = {
            "dense_model": lambda: model_dense(x),
            "sparse_model": lambda: sparse_module(x),
            "dense_layers": lambda: [m(i) for m, i in zip(layers, dense_in)],
            "sparse_layers": lambda: sparse_module.pruned_layers(*sparse_in),
        }
        if ort is not None:
            feed = {ort.get_inputs()[0].name: x.numpy()}
            fns["ort_model"] = lambda: ort.run(None, feed)
        with torch.inference_mode():
            steady = _alternating_times(fns, repeats, block)
            switched = _alternating_times(fns, repeats, 1)
        fastest = {k: float(v.min()) for k, v in steady.items()}
        out[f"batch{b}"] = {
            **_speedups(steady),
            "min_us": {k: round(v, 1) for k, v in fastest.items()},
            "layers_speedup_of_min": round(fastest["dense_layers"] / fastest["sparse_layers"], 2),
            "model_speedup_of_min": round(fastest["dense_model"] / fastest["sparse_model"], 2),
            **({"ort_model_speedup_of_min": round(fastest["ort_model"] / fastest["sparse_model"], 2)} if ort else {}),
            "interleaved": _speedups(switched),
        }
    dense_bytes = _dense_bytes(model_dense)
    out.update(dense_bytes=dense_bytes, sparse_bytes=sparse_module.file_bytes,
               size_ratio=round(dense_bytes / sparse_module.file_bytes, 2), repeats=repeats, block=block)
    return out


def _file_breakdown(path: Path) -> dict[str, int]:
    """Bytes of a .pmp file by kind: kept values, indices, dense tensors, header."""
    parts = {"values": 0, "index": 0, "dense": 0}
    with safe_open(str(path), "np") as f:
        for k in f.keys():
            kind = k.rsplit(".", 1)[-1]
            parts[kind if kind in ("values", "index") else "dense"] += f.get_tensor(k).nbytes
    parts["header"] = path.stat().st_size - sum(parts.values())
    return parts


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {**machine_fingerprint(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "numba_threads": numba.get_num_threads(), "numba_threading_layer": _threading_layer(),
            "python": platform.python_version(), "torch": torch.__version__, "numba": numba.__version__,
            "onnxruntime": _version("onnxruntime")}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        return "not initialised"


def run_benchmark(rates: Iterable[float] = (0.9, 0.95, 0.98, 0.99), out_path: str | Path | None = None,
                  repeats: int = 200, seed: int = 0, threads: int | None = None,
                  block: int = BLOCK_CALLS) -> dict[str, Any]:
    """Prune the default agcn by magnitude at each rate, export (.pmp and ONNX), load sparse, and
    bench it against the masked dense model in torch and in ONNX Runtime; writes the result as JSON
    to `out_path` if given. `threads` sets torch's, numba's and ONNX Runtime's thread counts
    (default: the machine's defaults; ONNX Runtime gets torch's count)."""
    _check_timing(repeats, block)
    start = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    torch.manual_seed(seed)
    base = with_random_batchnorm(create_model("agcn", **AGCN_DEFAULT).eval())
    spec = {"model": "agcn", "kwargs": AGCN_DEFAULT}
    result: dict[str, Any] = {"note": NOTE, "load_avg_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in rates:
            model = copy.deepcopy(base)
            masks = magnitude_prune(model, rate)
            path = save_compact(model, spec, masks, Path(tmp) / f"agcn_{rate:g}.pmp")
            half = save_compact(model, spec, masks, Path(tmp) / f"agcn_{rate:g}_fp16.pmp", fp16=True)
            module = load_sparse(path)
            x = torch.randn(8, *module.input_shape)
            onnx_path = to_onnx(model, x[:2], Path(tmp) / f"agcn_{rate:g}.onnx")
            session = ort_session(onnx_path)
            with torch.no_grad():
                err = float((model(x) - module(x)).abs().max())
                err_half = float((model(x) - load_sparse(half)(x)).abs().max())
            entry = bench_inference(model, module, repeats=repeats, seed=seed, block=block, ort=session)
            entry.update(
                ort_max_abs_diff=float(np.abs(session.run(None, {"x": x.numpy()})[0] - model(x).detach().numpy()).max()),
                onnx_bytes=onnx_path.stat().st_size,
                max_abs_diff=err, file_parts=_file_breakdown(path),
                fp16={"bytes": half.stat().st_size, "size_ratio": round(entry["dense_bytes"] / half.stat().st_size, 2),
                      "max_abs_diff": err_half},
                all_layers=_all_layers_size(base, spec, rate, Path(tmp), x, entry["dense_bytes"]),
                index_bytes=_index_bytes(masks),
            )
            result[f"{rate:g}"] = entry
    result.update(machine=_machine(), load_avg_end=list(os.getloadavg()), wall_s=round(time.perf_counter() - start, 1))
    if out_path is not None:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _all_layers_size(base: nn.Module, spec: dict, rate: float, tmp: Path, x: torch.Tensor,
                     dense_bytes: int) -> dict[str, Any]:
    """The file when the classifier is pruned at `rate` too (`pruning.exclude_last: false`): with
    it kept dense, its 17k weights alone outweigh the 1% kept of the other 1.07M at r = 0.99."""
    model = copy.deepcopy(base)
    masks = magnitude_prune(model, rate, exclude_last=False)
    path = save_compact(model, spec, masks, tmp / f"agcn_{rate:g}_all.pmp")
    with torch.no_grad():
        err = float((model(x) - load_sparse(path)(x)).abs().max())
    size = path.stat().st_size
    return {"bytes": size, "size_ratio": round(dense_bytes / size, 2), "max_abs_diff": err,
            "file_parts": _file_breakdown(path)}


def summary(result: dict[str, Any], out_path: str | Path | None = None) -> str:
    """What `pmp bench-inference` and benchmarks/inference.py print: one line per rate."""
    lines = [NOTE]
    for rate, r in result.items():
        if isinstance(r, dict) and "batch1" in r:
            lines.append(f"rate {rate}: size x{r['size_ratio']} (classifier pruned too x{r['all_layers']['size_ratio']}, "
                         f"fp16 x{r['fp16']['size_ratio']}), " + ", ".join(
                             f"{b}: layers x{r[b]['layers_speedup']} model x{r[b]['model_speedup']} "
                             f"(vs ONNX Runtime x{r[b].get('ort_model_speedup', '-')}; interleaved: "
                             f"x{r[b]['interleaved']['layers_speedup']}, x{r[b]['interleaved']['model_speedup']})"
                             for b in ("batch1", "batch64")))
    lines.append(f"{json.dumps(result['machine'])} wall {result['wall_s']} s" + (f" -> {out_path}" if out_path else ""))
    return "\n".join(lines)


def _index_bytes(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    """Index bytes of all pruned tensors under each encoding, with CSR (uint16 columns, int32 row
    pointers) alongside for comparison: the measurement behind the format's choice."""
    total: dict[str, int] = {}
    for m in masks.values():
        sizes = index_sizes(m.numpy())
        sizes["csr_u16"] = 2 * int(m.sum()) + 4 * (m.shape[0] + 1)
        for k, v in sizes.items():
            total[k] = total.get(k, 0) + v
    return total
