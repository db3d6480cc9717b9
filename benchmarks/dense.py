"""Dense backbone on FPHA (official 1:1, the sweep's seeds) and SBU (official 5 folds).

Trains the `dense` runs of configs/sweeps/{fpha,sbu}.yaml in the sweeps' own run folders (so the
full comparison, benchmarks/paper_table.py, reuses them instead of training them again) and writes
benchmarks/results/dense.json: accuracy per seed/fold, parameter count, wall time per run.

    python benchmarks/dense.py --data-root ../shared/data [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_table import DATASETS, RESULTS, machine  # noqa: E402

from pmp.experiments import load_sweep, run_sweep  # noqa: E402
from pmp.experiments.sweep import read_metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out: dict = {}
    t_all = time.perf_counter()
    for name, spec_path in DATASETS.items():
        spec = load_sweep(spec_path)
        dense = dataclasses.replace(spec, grid={**spec.grid, "pruning.method": ["dense"]})
        result = run_sweep(dense, workers=args.workers, data_root=args.data_root)
        runs = [read_metrics(spec.out / o.run_id) for o in result.runs]
        runs = [m for m in runs if m is not None]
        accs = [m["class_avg_acc"] for m in runs]
        out[name] = {
            "class_avg_acc": float(np.mean(accs)),
            "class_avg_acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "overall_acc": float(np.mean([m["overall_acc"] for m in runs])),
            "runs": [{"seed": m["seed"], "split": m["split"], "class_avg_acc": m["class_avg_acc"],
                      "overall_acc": m["overall_acc"], "wall_s": m["wall_s"], "epochs": m["epochs"]} for m in runs],
            "params": runs[0]["params"],
            "prunable_params": runs[0]["prunable"],
            "failed": [o.run_id for o in result.failed],
        }
        if name == "sbu":
            out[name]["folds"] = [m["class_avg_acc"] for m in sorted(runs, key=lambda m: m["split"])]
        print(f"{name}: class-averaged accuracy {100 * out[name]['class_avg_acc']:.2f} "
              f"+- {100 * out[name]['class_avg_acc_std']:.2f}% over {len(runs)} runs")
    out["meta"] = {"machine": machine(), "wall_s": round(time.perf_counter() - t_all, 1),
                   "command": "python benchmarks/dense.py",
                   "note": "wall_s per run is training time of one worker; runs of a sweep share the machine"}
    (RESULTS / "dense.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
