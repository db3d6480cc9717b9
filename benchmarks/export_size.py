"""File size of trained, exported PMP runs at r = 0.99 (FPHA), raw and compressed, with accuracy.

The inference benchmark measures sizes on random weights; the codec's gain depends on what the
weights learned, so the size targets are checked here on real runs: configs/sweeps/deploy.yaml
(3 seeds x classifier dense / pruned x per-layer / global budget), trained if not already there.
Each run is exported three ways (raw float32, lossless byte-plane DEFLATE = the default, fp16),
and each file is loaded back and checked against the masked dense model on random inputs.

    python benchmarks/export_size.py --data-root ../shared/data [--workers 2]

Writes benchmarks/results/export_size.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_table import RESULTS, machine  # noqa: E402

from pmp.experiments import load_sweep, run_sweep  # noqa: E402
from pmp.experiments.sweep import RUN_INFO, read_metrics  # noqa: E402
from pmp.export import export_run, load_sparse  # noqa: E402
from pmp.machine import machine_fingerprint  # noqa: E402
from pmp.models import create_model  # noqa: E402

SPEC = ROOT / "configs" / "sweeps" / "deploy.yaml"
VARIANTS = {"raw": dict(compress=False), "compressed": dict(compress=True), "fp16": dict(compress=True, fp16=True)}


def measure_run(run_dir: Path, tmp: Path) -> dict:
    spec = json.loads((run_dir / "model.json").read_text())
    model = create_model(spec["model"], **spec["kwargs"]).eval()
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    dense_bytes = (run_dir / "model.safetensors").stat().st_size
    x = torch.randn(16, *load_sparse(export_run(run_dir, tmp / "probe.pmp")).input_shape,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    metrics = read_metrics(run_dir)
    out: dict = {"dense_bytes": dense_bytes, "class_avg_acc": metrics["class_avg_acc"], "train_wall_s": metrics["wall_s"],
                 "max_abs_logit": float(ref.abs().max())}
    for name, kw in VARIANTS.items():
        path = export_run(run_dir, tmp / f"{name}.pmp", **kw)
        with torch.no_grad():
            diff = float((load_sparse(path)(x) - ref).abs().max())
        out[name] = {"bytes": path.stat().st_size, "size_ratio": round(dense_bytes / path.stat().st_size, 2),
                     "max_abs_diff": diff, "max_rel_diff": diff / float(ref.abs().max())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    spec = load_sweep(SPEC)
    result = run_sweep(spec, workers=args.workers, data_root=args.data_root)
    if not result.ok:
        raise SystemExit(result.summary())
    train_wall = time.perf_counter() - t0
    groups: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in sorted(result.runs, key=lambda r: r.run_id):
            run_dir = result.out_dir / run.run_id
            axes = json.loads((run_dir / RUN_INFO).read_text())["axes"]
            key = (f"classifier_{'dense' if axes['pruning.exclude_last'] else 'pruned'}"
                   f"_{axes['pruning.scope']}")
            groups.setdefault(key, {})[f"seed{axes['train.seed']}"] = measure_run(run_dir, Path(tmp))
    summary = {}
    for key, runs in groups.items():
        rs = list(runs.values())
        summary[key] = {
            "class_avg_acc_mean": round(statistics.mean(r["class_avg_acc"] for r in rs), 4),
            **{f"{v}_size_ratio_mean": round(statistics.mean(r[v]["size_ratio"] for r in rs), 2) for v in VARIANTS},
            **{f"{v}_size_ratio_min": min(r[v]["size_ratio"] for r in rs) for v in VARIANTS},
            "runs": runs,
        }
    doc = {"rate": 0.99, "dataset": "fpha", "summary": summary,
           "meta": {"machine": machine(), "fingerprint": machine_fingerprint(), "command": "python benchmarks/export_size.py",
                    "sweep_wall_s": round(train_wall, 1), "wall_s": round(time.perf_counter() - t0, 1),
                    "note": "sweep_wall_s is this invocation's (finished runs are reused); each run's own "
                            "training time is its train_wall_s"}}
    (RESULTS / "export_size.json").write_text(json.dumps(doc, indent=2) + "\n")
    print("| classifier / budget | class-avg acc | raw | compressed | fp16 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, s in summary.items():
        print(f"| {key} | {100 * s['class_avg_acc_mean']:.2f} | {s['raw_size_ratio_mean']}x | "
              f"{s['compressed_size_ratio_mean']}x | {s['fp16_size_ratio_mean']}x |")


if __name__ == "__main__":
    main()
