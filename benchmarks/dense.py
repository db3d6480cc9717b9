"""The default dense backbone on FPHA (official 1:1, 5 seeds) and SBU (official 5 folds x 3 seeds).

Trains the `dense` runs of configs/sweeps/{fpha,sbu}.yaml in the sweeps' own run folders, after
restoring the sweeps' archives (benchmarks/results/archive/{fpha,sbu}.jsonl), so that these are the
very runs of the full comparison (benchmarks/paper_table.py) and its dense cells: finished runs are
not retrained, on a fresh checkout either. Writes benchmarks/results/dense.json: accuracy per run, mean, std and
a 95% t-interval of the mean, SBU per fold and SBU's fold 5 alone (65 test sequences, the single
split the seed paper's family most likely reports), parameter count, wall time per run.

    python benchmarks/dense.py --data-root ../shared/data [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from backbone_ablation import update_results_doc  # noqa: E402
from paper_table import ARCHIVES, DATASETS, RESULTS, machine  # noqa: E402

from pmp.experiments import archive, load_sweep, run_sweep  # noqa: E402
from pmp.experiments.stats import mean_ci  # noqa: E402
from pmp.experiments.sweep import read_metrics  # noqa: E402
from pmp.machine import machine_fingerprint  # noqa: E402
from pmp.training.config import load_config  # noqa: E402


def summarize(name: str, runs: list[dict]) -> dict:
    ci = mean_ci([m["class_avg_acc"] for m in runs])
    out = {
        "class_avg_acc": ci.mean, "class_avg_acc_std": ci.std, "ci95": [ci.lo, ci.hi], "n_runs": ci.n,
        "overall_acc": mean_ci([m["overall_acc"] for m in runs]).mean,
        "runs": [{"seed": m["seed"], "fold": m["split"], "class_avg_acc": m["class_avg_acc"],
                  "overall_acc": m["overall_acc"], "wall_s": m["wall_s"], "epochs": m["epochs"]} for m in runs],
        "params": runs[0]["params"], "prunable_params": runs[0]["prunable"],
        "wall_s_per_run": mean_ci([m["wall_s"] for m in runs]).mean,
    }
    if name == "sbu":
        folds = sorted({m["split"] for m in runs})
        out["folds"] = [mean_ci([m["class_avg_acc"] for m in runs if m["split"] == f]).mean for f in folds]
        fold5 = mean_ci([m["class_avg_acc"] for m in runs if m["split"] == "5"])
        out["fold5_class_avg_acc"], out["fold5_ci95"] = fold5.mean, [fold5.lo, fold5.hi]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out: dict = {}
    t_all = time.perf_counter()
    for name, spec_path in DATASETS.items():
        spec = load_sweep(spec_path)
        out.setdefault("backbone", load_config(spec.base).model.name)
        dense = dataclasses.replace(spec, grid={**spec.grid, "pruning.method": ["dense"]})
        with archive.kept(ARCHIVES / f"{spec.name}.jsonl", spec.out) as restored:
            print(f"{name}: {len(restored)} finished runs of the grid restored")
            result = run_sweep(dense, workers=args.workers, data_root=args.data_root)
        runs = [m for m in (read_metrics(spec.out / o.run_id) for o in result.runs) if m is not None]
        out[name] = {**summarize(name, runs), "config": str(spec.base),
                     "failed": [o.run_id for o in result.failed]}
        lo, hi = out[name]["ci95"]
        print(f"{name}: class-averaged accuracy {100 * out[name]['class_avg_acc']:.2f} "
              f"+- {100 * out[name]['class_avg_acc_std']:.2f}% (95% CI {100 * lo:.2f}-{100 * hi:.2f}) over {len(runs)} runs")
    out["meta"] = {"machine": machine(), "fingerprint": machine_fingerprint(), "wall_s": round(time.perf_counter() - t_all, 1),
                   "command": "python benchmarks/dense.py",
                   "note": "wall_s per run is the training time of one worker (one torch thread); "
                           "the runs of a sweep share the machine"}
    (RESULTS / "dense.json").write_text(json.dumps(out, indent=2))
    update_results_doc()


if __name__ == "__main__":
    main()
