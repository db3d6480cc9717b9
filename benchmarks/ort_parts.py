"""Where dense ONNX Runtime's time goes on the inference benchmark's network, per op kind.

    .venv/bin/python benchmarks/ort_parts.py [--rate 0.98] [--calls 200] [--out benchmarks/results/ort_parts.json]

The bar the sparse runtime is compared with (`ort_model_speedup` in inference.json) is ONNX
Runtime on the masked dense graph. Its profiler (SessionOptions.enable_profiling) gives each
node's kernel time; nodes are grouped into the products with a weight (the prunable layers and
the classifier: the only work pruning removes), the attention's products between activations,
softmax, BatchNorm, layout ops (Transpose/Reshape) and the rest. By Amdahl, ONNX Runtime's time
outside the pruned products bounds what any sparse kernel can gain over it; the sparse runtime's
own split is in sparse_parts.json / inference.json (`sparse_unpruned_share`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from pmp.export.bench import AGCN_DEFAULT, _machine, magnitude_prune, with_random_batchnorm
from pmp.export.onnx import to_onnx
from pmp.models import create_model

LAYOUT_OPS = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Concat", "Slice", "Gather", "Shape"}


def profile(path: Path, x: torch.Tensor, calls: int, threads: int) -> dict:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))  # the graph ORT actually runs
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    for _ in range(10):
        session.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    wall = (time.perf_counter() - t0) / calls * 1e6
    events = json.loads(Path(session.end_profiling()).read_text())
    # node names in the optimised graph: fused nodes keep the name of the node they replaced
    optimised = onnx.load(str(path.with_suffix(".opt.onnx")))
    op_of = {n.name: n.op_type for n in optimised.graph.node}
    inits = {i.name for i in optimised.graph.initializer}
    weights = {n.name: [i for i in n.input if i in inits] for n in optimised.graph.node
               if n.op_type in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")}
    per_kind: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    runs = calls + 10
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", op_of.get(node, "?"))
        if node in weights:  # the classifier stays dense; the other weight products are the pruned layers
            kind = ("classifier" if "classifier.weight" in weights[node] else
                    "pruned_layer_products" if weights[node] else "attention_products")
        else:
            kind = ("softmax" if op == "Softmax" else "batchnorm" if op == "BatchNormalization" else
                    "layout" if op in LAYOUT_OPS else "other")
        per_kind[kind] += e["dur"] / runs
        per_op[op] += e["dur"] / runs
    kernels = sum(per_kind.values())
    return {"wall_us_per_call": round(wall, 1), "kernel_us_per_call": round(kernels, 1),
            "by_kind_us": {k: round(v, 1) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])},
            "by_kind_share": {k: round(v / kernels, 3) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])},
            "by_op_us": {k: round(v, 1) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=0.98)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--out", default="benchmarks/results/ort_parts.json")
    args = p.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    model = with_random_batchnorm(create_model("agcn", **AGCN_DEFAULT).eval())
    magnitude_prune(model, args.rate)
    threads = torch.get_num_threads()
    result: dict = {"rate": args.rate, "model": AGCN_DEFAULT, "threads": threads, "note": __doc__.split("\n\n")[1]
                    .replace("\n", " ")}
    gen = torch.Generator().manual_seed(0)
    shape = (AGCN_DEFAULT["in_frames"], AGCN_DEFAULT["num_nodes"], AGCN_DEFAULT["in_channels"])
    with tempfile.TemporaryDirectory() as tmp:
        path = to_onnx(model, torch.zeros(2, *shape), Path(tmp) / "m.onnx")
        for b in (1, 64):
            result[f"batch{b}"] = profile(path, torch.randn(b, *shape, generator=gen), args.calls, threads)
            r = result[f"batch{b}"]
            print(f"batch {b}: {r['wall_us_per_call']} us/call; " + ", ".join(
                f"{k} {v:.0%}" for k, v in r["by_kind_share"].items()))
    result.update(machine=_machine(), wall_s=round(time.perf_counter() - start, 1))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
