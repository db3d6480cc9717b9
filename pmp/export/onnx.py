"""ONNX export of any registered model, for ONNX Runtime, OpenVINO, TensorRT and the rest.

Why: deployers of skeleton models run ONNX graphs, not this project's `.pmp` runtime. The graph is
the masked dense network (pruned weights exactly zero) traced by torch's `torch.export`-based
exporter (`torch.onnx.export(dynamo=True)`, the default since torch 2.9; it needs `onnxscript`), with
a dynamic batch axis, so it is model-agnostic: whatever the registry builds, this exports.

`sparse=True` stores each mostly-zero weight as an ONNX sparse tensor (kept values + their flat
int64 positions): a `Constant` node with a `sparse_value`, which every op reads as the dense tensor.
That is the form `onnx.checker`'s full check accepts: the same tensor as a graph-level
`sparse_initializer` is typed `sparse_tensor(float)` by ONNX's shape inference, which Gemm/MatMul
reject (ONNX Runtime loads both and densifies them at load time, so speed is unchanged; the file
shrinks). Sizes both ways: benchmarks/onnx_size.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: Input, output and batch-axis names of the exported graph.
INPUT, OUTPUT, BATCH = "x", "logits", "batch"
#: Bytes of one kept entry of an ONNX sparse tensor: float32 value + int64 flat position.
SPARSE_ENTRY_BYTES = 4 + 8


def _require_onnx() -> Any:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError as e:
        raise ImportError(f"ONNX export needs the optional dependencies: pip install 'pmp[onnx]' ({e})") from e
    return onnx


def example_input(spec: dict[str, Any], batch: int = 2) -> torch.Tensor:
    """A preprocessed input of the shape `spec` (a run's model.json) was trained on: (B, T, V, C).
    Batch 2, not 1: torch.export would specialise the batch axis on a size-1 example."""
    kw = spec["kwargs"]
    return torch.zeros(batch, kw["in_frames"], kw["num_nodes"], kw["in_channels"])


def _translations() -> dict[Any, Any]:
    """ONNX translations of the ATen ops backbones use that torch's exporter has none for.

    `torch.cdist` (joint-distance features): the direct difference form, as torch computes it with
    compute_mode="donot_use_mm_for_euclid_dist" (the matrix-product form loses precision near 0)."""
    from onnxscript import opset18 as op

    def cdist(x1: Any, x2: Any, p: float = 2.0, compute_mode: int | None = None) -> Any:
        d = op.Sub(op.Unsqueeze(x1, [-2]), op.Unsqueeze(x2, [-3]))
        if p == 2.0:
            return op.Sqrt(op.ReduceSum(op.Mul(d, d), [-1], keepdims=0))
        return op.Pow(op.ReduceSum(op.Pow(op.Abs(d), p), [-1], keepdims=0), 1.0 / p)

    return {torch.ops.aten._cdist_forward.default: cdist}


def sparsify(model_proto: Any) -> int:
    """Move every float initializer that is smaller as an ONNX sparse tensor into a `Constant`
    node with `sparse_value`; returns how many were moved."""
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    constants = []
    for init in list(graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype != np.float32 or a.ndim == 0:  # ONNX sparse tensors have rank >= 1
            continue
        kept = np.flatnonzero(a)
        if SPARSE_ENTRY_BYTES * len(kept) >= a.nbytes:
            continue
        values = numpy_helper.from_array(a.reshape(-1)[kept], init.name)
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(kept.astype(np.int64), ""), list(a.shape))
        constants.append(helper.make_node("Constant", [], [init.name], name=f"sparse/{init.name}", sparse_value=sparse))
        graph.initializer.remove(init)
    for i, node in enumerate(constants):  # constants first: the graph stays topologically sorted
        graph.node.insert(i, node)
    return len(constants)


def to_onnx(model: nn.Module, example: torch.Tensor, out_path: str | Path, *, sparse: bool = False,
            metadata: dict[str, str] | None = None) -> Path:
    """Export `model` (eval mode, as it is) to `out_path` as one self-contained ONNX file with a
    dynamic batch axis, validated by `onnx.checker` (full check, shape inference included)."""
    onnx = _require_onnx()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)  # "torchvision is not installed": irrelevant here
    try:
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=({0: torch.export.Dim(BATCH)},), verbose=False,
                                    custom_translation_table=_translations())
    finally:
        registry_log.setLevel(level)
    proto = program.model_proto
    if sparse:
        sparsify(proto)
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


def masked_run_model(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A finished run's final model and its model.json, refusing weights outside the saved masks
    (the ONNX graph must be the masked dense network the run evaluated)."""
    from safetensors.torch import load_file

    from pmp.training.trainer import load_trained_model

    run = Path(run_dir)
    model, spec = load_trained_model(run)
    masks_path = run / "masks.safetensors"
    if not masks_path.is_file():
        raise FileNotFoundError(f"{masks_path}: missing (is {run} a finished run folder?)")
    for name, mask in load_file(str(masks_path)).items():
        stray = int(torch.count_nonzero(model.get_parameter(name).detach()[~mask.bool()]))
        if stray:
            raise ValueError(f"{run}: {name}: {stray} non-zero weights outside the mask (model not finalised?)")
    return model, spec


def export_onnx(run_dir: str | Path, out_path: str | Path, *, sparse: bool = False) -> Path:
    """`pmp export RUN --format onnx`: the run's masked dense model as ONNX; the run's model.json
    travels in the file's metadata (`pmp.model`: class names, preprocessing) so that inputs can be
    prepared as in training."""
    model, spec = masked_run_model(run_dir)
    return to_onnx(model, example_input(spec), out_path, sparse=sparse, metadata={"pmp.model": json.dumps(spec)})


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation on; `threads` intra-op threads
    (default: torch's thread count, so that both runtimes get the same cores). Its threads do not
    spin-wait between calls: spinning ones keep the cores busy after a call returns, which in a
    process that also runs torch or numba (or on a shared machine) starves those thread pools."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"ONNX Runtime is an optional dependency: pip install 'pmp[onnx]' ({e})") from e
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
