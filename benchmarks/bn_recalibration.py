"""Why PMP collapses on stgcn (docs/backbones/stgcn.md): a diagnostic, no training.

PMP trains the soft network (latent weights times a band-stop); its hard-masked network is what is
reported. On stgcn the two differ by 29-52 points (`soft_class_avg_acc` vs `class_avg_acc` in the
runs' metrics). This script asks how much of that gap is BatchNorm statistics gathered on the soft
network: for every finished run of the backbones sweeps' folders it re-estimates each BatchNorm's
running mean and variance on the run's training split (train mode, no gradient, a cumulative
average, no augmentation, dropout off; pmp.pruning.recalibrate_batchnorm), with the final weights and masks untouched, and re-evaluates on the
test split. MP and GMP runs, which train under their final hard mask, are the control.

    python benchmarks/bn_recalibration.py --data-root ../shared/data [--sweeps work_dirs/backbones/stgcn_fpha ...]

Writes benchmarks/results/bn_recalibration.json: per sweep and (method, rate), the mean over runs of
the hard accuracy as trained, after recalibration, and PMP's soft accuracy, with the run count;
under "runs", the first two of every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from pmp.pruning import recalibrate_batchnorm
from pmp.training.config import load_config
from pmp.training.trainer import evaluate, load_run_metrics, load_trained_model, split_data

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--sweeps", nargs="+", type=Path,
                    default=[ROOT / "work_dirs/backbones/stgcn_fpha", ROOT / "work_dirs/backbones/stgcn_sbu"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bn_recalibration.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out: dict = {"command": " ".join(["python", "benchmarks/bn_recalibration.py", *sys.argv[1:]]), "sweeps": {}}
    for sweep in args.sweeps:
        cells: dict = defaultdict(lambda: defaultdict(list))
        per_run: dict = {}
        data: dict = {}
        runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
        if not runs:
            raise SystemExit(f"{sweep}: no finished runs (run benchmarks/backbones.py first)")
        for run in runs:
            metrics = load_run_metrics(run)
            if metrics["method"] == "dense":
                continue
            cfg = load_config(run / "config.yaml")
            key = (cfg.data.name, cfg.data.split, json.dumps(cfg.data.options, sort_keys=True))
            if key not in data:
                d = split_data(cfg, args.data_root)
                data[key] = (d.x_train, d.x_test, d.y_test, d.num_classes)
            x_train, x_test, y_test, classes = data[key]
            model = load_trained_model(run)[0]
            hard = evaluate(model, x_test, y_test, classes).class_avg_acc
            recalibrate_batchnorm(model, x_train.split(64))
            cell = cells[f"{metrics['method']}@{metrics['rate']:g}"]
            cell["hard"].append(hard)
            cell["recalibrated"].append(evaluate(model, x_test, y_test, classes).class_avg_acc)
            cell["soft"].append(metrics.get("soft_class_avg_acc"))
            per_run[run.name] = {"hard": hard, "recalibrated": cell["recalibrated"][-1]}
            print(f"{sweep.name} {run.name}: {100 * hard:.2f} -> {100 * cell['recalibrated'][-1]:.2f}", flush=True)
        out["sweeps"][sweep.name] = {
            label: {"runs": len(c["hard"]), **{k: sum(v) / len(v) for k, v in c.items() if None not in v}}
            for label, c in sorted(cells.items())}
        out.setdefault("runs", {})[sweep.name] = per_run
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["sweeps"], indent=1))


if __name__ == "__main__":
    main()
