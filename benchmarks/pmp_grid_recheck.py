"""Rerun the PMP rows of the paper grid with the current code and compare them with the stored grid.

The grid in benchmarks/results/fpha.csv, sbu.csv and pmp.json was trained before PMP's band-stop
became a compiled float32 kernel (session 2). This reruns every PMP run of configs/sweeps/fpha.yaml
and sbu.yaml (48 runs, same seeds, folds and epochs) into work_dirs/sweeps/pmp_recheck_<dataset>
and writes, per dataset and rate, the stored and the new class-averaged accuracy (per run and
mean) to benchmarks/results/pmp_grid_recheck.json. It does not touch the stored grid.

    python benchmarks/pmp_grid_recheck.py --data-root ../shared/data [--workers 2]   # ~10 min here
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from pmp.experiments import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _stored(name: str) -> dict[tuple[str, str], float]:
    """(rate, seed or fold) -> class-averaged accuracy of the stored PMP runs."""
    with open(RESULTS / f"{name}.csv") as f:
        return {(f"{float(r['rate']):g}", r["fold"] or r["seed"]): float(r["class_avg_acc"])
                for r in csv.DictReader(f) if r["method"] == "pmp"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out: dict = {"command": "python benchmarks/pmp_grid_recheck.py"}
    for name in ("fpha", "sbu"):
        spec = load_sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml")
        spec = dataclasses.replace(spec, name=f"pmp_recheck_{name}", out=ROOT / "work_dirs" / "sweeps" / f"pmp_recheck_{name}",
                                   grid={**spec.grid, "pruning.method": ["pmp"]})
        t0 = time.perf_counter()
        result = run_sweep(spec, workers=args.workers, data_root=args.data_root)
        if not result.ok:
            raise SystemExit(result.summary())
        stored = _stored(name)
        cells: dict[str, dict] = {}
        for metrics_path in sorted(spec.out.glob("*/metrics.json")):
            m = json.loads(metrics_path.read_text())
            rate = f"{m['rate']:g}"
            key = str(m["split"]) if name == "sbu" else str(m["seed"])
            cell = cells.setdefault(rate, {"runs": {}, "stored_runs": {}})
            cell["runs"][key] = m["class_avg_acc"]
            cell["stored_runs"][key] = stored[(rate, key)]
        for cell in cells.values():
            new, old = list(cell["runs"].values()), list(cell["stored_runs"].values())
            cell.update(mean=float(np.mean(new)), stored_mean=float(np.mean(old)),
                        mean_diff_points=round(100 * (np.mean(new) - np.mean(old)), 2))
        out[name] = {"sweep_wall_s": round(time.perf_counter() - t0, 1), "cells": dict(sorted(cells.items()))}
        diffs = [c["mean_diff_points"] for c in cells.values()]
        print(f"{name}: cell means new - stored, points: {diffs}")
    (RESULTS / "pmp_grid_recheck.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
