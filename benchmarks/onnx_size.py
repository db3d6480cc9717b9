"""ONNX file sizes of a pruned network: pruned weights as zeros vs ONNX sparse tensors.

    .venv/bin/python benchmarks/onnx_size.py [--rates 0.9,0.95,0.98,0.99] [--out benchmarks/results/onnx_size.json]

For the inference benchmark's model (`pmp.export.bench.AGCN_DEFAULT`, random weights, random
BatchNorm statistics, magnitude-pruned per layer) at each rate: the dense-zeros ONNX file
(`pmp export --format onnx`), the same with sparse tensors as `Constant(sparse_value)` nodes
(`--onnx-sparse`, passes onnx.checker's full check), with graph-level `sparse_initializer`s
(fails the full check: see pmp/export/onnx.py), their gzip sizes, the `.pmp` file and the dense
`model.safetensors`; and whether ONNX Runtime loads each variant and gives the same logits.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import torch

from pmp.export.bench import AGCN_DEFAULT, _dense_bytes, _machine, magnitude_prune, with_random_batchnorm
from pmp.export.format import save_compact
from pmp.export.onnx import ort_session, sparsify, to_onnx
from pmp.models import create_model


def _as_sparse_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The `Constant(sparse_value)` nodes of a sparsified model moved to graph.sparse_initializer."""
    out = copy.deepcopy(proto)
    for node in [n for n in out.graph.node if n.op_type == "Constant" and n.attribute[0].name == "sparse_value"]:
        out.graph.sparse_initializer.append(node.attribute[0].sparse_tensor)
        out.graph.node.remove(node)
    return out


def _full_check(proto: onnx.ModelProto) -> str:
    try:
        onnx.checker.check_model(proto, full_check=True)
        return "passes"
    except Exception as e:  # noqa: BLE001 - the checker raises several types; the message is the result
        return f"fails: {str(e).splitlines()[0][:160]}"


def measure(rate: float, tmp: Path, x: torch.Tensor) -> dict:
    torch.manual_seed(0)
    model = with_random_batchnorm(create_model("agcn", **AGCN_DEFAULT).eval())
    masks = magnitude_prune(model, rate)
    with torch.no_grad():
        want = model(x).numpy()
    dense = to_onnx(model, x[:2], tmp / "dense.onnx")
    proto = onnx.load(str(dense))
    moved = sparsify(proto)
    variants = {"zeros": dense, "sparse_constant": tmp / "sparse.onnx", "sparse_initializer": tmp / "init.onnx"}
    onnx.save(proto, str(variants["sparse_constant"]))
    init = _as_sparse_initializers(proto)
    onnx.save(init, str(variants["sparse_initializer"]))
    out: dict = {"sparse_tensors": moved, "full_check": {"sparse_constant": _full_check(proto),
                                                         "sparse_initializer": _full_check(init)}}
    for name, path in variants.items():
        raw = path.read_bytes()
        got = ort_session(path, threads=1).run(None, {"x": x.numpy()})[0]
        out[name] = {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9)),
                     "ort_max_rel_diff": float(np.abs(got - want).max() / np.abs(want).max())}
    pmp_file = save_compact(model, {"model": "agcn", "kwargs": AGCN_DEFAULT}, masks, tmp / "m.pmp")
    out["pmp_bytes"] = pmp_file.stat().st_size
    out["dense_safetensors_bytes"] = _dense_bytes(model)
    for name in variants:
        out[name]["vs_pmp"] = round(out[name]["bytes"] / out["pmp_bytes"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="0.9,0.95,0.98,0.99")
    p.add_argument("--out", default="benchmarks/results/onnx_size.json")
    args = p.parse_args()
    start = time.perf_counter()
    x = torch.randn(8, AGCN_DEFAULT["in_frames"], AGCN_DEFAULT["num_nodes"], AGCN_DEFAULT["in_channels"],
                    generator=torch.Generator().manual_seed(1))
    result: dict = {"model": AGCN_DEFAULT, "note": __doc__.split("\n\n")[1].replace("\n", " ")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in (float(v) for v in args.rates.split(",")):
            result[f"{r:g}"] = measure(r, Path(tmp), x)
            e = result[f"{r:g}"]
            print(f"rate {r:g}: zeros {e['zeros']['bytes']:,} B, sparse {e['sparse_constant']['bytes']:,} B, "
                  f".pmp {e['pmp_bytes']:,} B")
    result.update(machine={**_machine(), "onnx": version("onnx"), "onnxscript": version("onnxscript")},
                  wall_s=round(time.perf_counter() - start, 1))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
