"""One MRMP training against per-rate PMP runs and one-training magnitude baselines (issue 13).

Per dataset (FPHA: seeds on the official 1:1 split; SBU: the 5 folds, seed 0), on the dataset's
default config (configs/<dataset>.yaml, its backbone and epochs), one sweep of:
  - mrmp: one training at the training rates (--rates), evaluated at those and at --unseen rates;
  - pmp: one run per rate, training and unseen rates alike;
  - dense: one run; "mp_one_training" is its network magnitude-pruned at each rate (exact top-k of
    |W| in the config's scope, no fine-tune), computed here from the dense run's weights;
  - "mp_one_training_finetuned": the same dense run's weights (`train.init`) pruned by magnitude at
    each rate (`mp`, prune_at 0) and fine-tuned for --finetune-epochs each (one cosine schedule):
    one dense training serves every rate, at --finetune-epochs per rate.
The result, accuracies as fractions (means over seeds/folds), to --out:
  {"fpha": {"cost_ratio": X, "rates": {"0.9": {"mrmp": A, "pmp": B, "mp_one_training": C,
            "mp_one_training_finetuned": D, "seen": true}, ...}, ...}, "sbu": {...}}
cost_ratio = mean MRMP training wall time / mean PMP training wall time of the same sweep. Each
dataset is written as soon as it finishes (with its own "meta": command, machine, commit, wall time),
beside the datasets already in --out, so `--datasets sbu` and `--datasets fpha` may run apart.

    python benchmarks/multirate.py --data-root ../shared/data [--workers 2]     # the full benchmark
    python benchmarks/multirate.py --datasets fpha --seeds 0 --epochs 2 --work-dir /tmp/w --out /tmp/m.json  # smoke

Runs live in --work-dir/<dataset> (resumable: finished runs are kept); the sweep report (tables,
the accuracy-vs-rate plot with MRMP's seen and unseen rates) goes to --work-dir/<dataset>/report.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from pmp.data import load_dataset, preprocess
from pmp.experiments import parse_sweep, report, run_sweep
from pmp.experiments.sweep import read_metrics
from pmp.machine import machine_fingerprint
from pmp.pruning.masks import topk_masks
from pmp.pruning.targets import select_targets
from pmp.training import load_config
from pmp.training.config import parse_set_options
from pmp.training.trainer import evaluate, load_trained_model

ROOT = Path(__file__).resolve().parents[1]
RATES = [0.5, 0.7, 0.9, 0.95, 0.98, 0.99]
UNSEEN = [0.8, 0.93, 0.97]
FOLDS = ["1", "2", "3", "4", "5"]


def _sweep(dataset: str, args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    units = {"train.seed": args.seeds, "data.split": ["1:1"]} if dataset == "fpha" else {
        "train.seed": [0], "data.split": args.folds}
    return {
        "name": f"multirate_{dataset}", "base": str(ROOT / "configs" / f"{dataset}.yaml"),
        "out": str(Path(args.work_dir) / dataset),
        "grid": {"method": ["dense", "pmp", "mrmp"], "rate": sorted(args.rates + args.unseen), **units},
        "overrides": {"train.epochs": epochs, **parse_set_options(args.set)},
        "method_overrides": {
            "mrmp": {"pruning.options.rates": args.rates, "pruning.options.eval_rates": sorted(args.rates + args.unseen),
                     "pruning.options.mode": args.mode, "pruning.options.samples": args.samples,
                     "pruning.options.always_highest": args.always_highest},
        },
    }


def _finetunes(dataset: str, args: argparse.Namespace, dense: dict[str, Any]) -> list[dict[str, Any]]:
    """The one-training baseline: the dense run `dense` pruned by magnitude at every rate and each
    fine-tuned for --finetune-epochs from its weights, with the dense run's seed and split."""
    unit = {"train.seed": [dense["seed"]], "data.split": [dense["split"]]}
    spec = parse_sweep({
        "name": f"multirate_{dataset}_finetune", "base": str(ROOT / "configs" / f"{dataset}.yaml"),
        "out": str(Path(args.work_dir) / f"{dataset}_finetune"),
        "grid": {"method": ["mp"], "rate": sorted(args.rates + args.unseen), **unit},
        "overrides": {**parse_set_options(args.set), "train.epochs": args.finetune_epochs,
                      "train.init": str(dense["_dir"]), "pruning.options.prune_at": 0.0},
    })
    run_sweep(spec, workers=args.workers, data_root=args.data_root)
    return [m for d in sorted(spec.out.iterdir()) if d.is_dir() and (m := read_metrics(d)) is not None
            and m.get("init_sha256") and m["seed"] == dense["seed"] and m["split"] == dense["split"]]


def _test_split(cfg) -> tuple[torch.Tensor, torch.Tensor, int]:
    ds = load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    test = torch.as_tensor(ds.split(cfg.data.split).test)
    return preprocess(ds, cfg.preprocess)[test], torch.as_tensor(ds.labels)[test], ds.num_classes


@torch.no_grad()
def _magnitude_pruned(run_dir: Path, rates: list[float]) -> dict[str, float]:
    """Class-averaged accuracy of a dense run's network pruned by |W| at each rate, no fine-tune."""
    cfg = load_config(run_dir / "config.yaml")
    x, y, classes = _test_split(cfg)
    model, _ = load_trained_model(run_dir)
    p = cfg.pruning
    names = [t.name for t in select_targets(model, p.include, p.exclude, p.exclude_last)]
    dense = {n: model.get_parameter(n).detach().clone() for n in names}
    out = {}
    for rate in rates:
        masks = topk_masks({n: w.abs() for n, w in dense.items()}, rate, p.scope)
        for n, w in dense.items():
            model.get_parameter(n).copy_(w * masks[n])
        out[f"{rate:g}"] = evaluate(model, x, y, classes).class_avg_acc
    return out


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    epochs = args.epochs or load_config(ROOT / "configs" / f"{dataset}.yaml").train.epochs
    spec = parse_sweep(_sweep(dataset, args, epochs))
    t0 = time.perf_counter()
    result = run_sweep(spec, workers=args.workers, data_root=args.data_root)
    if not result.ok:
        raise SystemExit(result.summary())
    runs = [m | {"_dir": d} for d in sorted(spec.out.iterdir()) if d.is_dir() and (m := read_metrics(d)) is not None]
    rates = sorted(args.rates + args.unseen)
    cells: dict[str, dict[str, list[float]]] = {f"{r:g}": {} for r in rates}
    wall: dict[str, list[float]] = {"mrmp": [], "pmp": []}
    for m in runs:
        method = m["method"]
        if method in wall:
            wall[method].append(m["wall_s"])
        if method == "mrmp":
            for key, v in m["rates"].items():
                cells[key].setdefault("mrmp", []).append(v["class_avg_acc"])
        elif method == "pmp":
            cells[f"{m['rate']:g}"].setdefault("pmp", []).append(m["class_avg_acc"])
        elif method == "dense":
            for key, a in _magnitude_pruned(m["_dir"], rates).items():
                cells[key].setdefault("mp_one_training", []).append(a)
            for t in _finetunes(dataset, args, m) if args.finetune_epochs else []:
                cells[f"{t['rate']:g}"].setdefault("mp_one_training_finetuned", []).append(t["class_avg_acc"])
    report(spec.out)
    seen = set(args.rates)
    return {
        "cost_ratio": statistics.fmean(wall["mrmp"]) / statistics.fmean(wall["pmp"]),
        "mrmp_wall_s": _mean(wall["mrmp"]), "pmp_wall_s": _mean(wall["pmp"]), "epochs": epochs,
        "finetune_epochs": args.finetune_epochs, "runs": len(runs), "sweep_wall_s": round(time.perf_counter() - t0, 1),
        "units": args.seeds if dataset == "fpha" else args.folds,
        "rates": {key: {**{k: _mean(v) for k, v in c.items()}, "seen": float(key) in seen} for key, c in cells.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=["fpha", "sbu"], choices=["fpha", "sbu"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="FPHA seeds")
    ap.add_argument("--folds", nargs="+", default=FOLDS, help="SBU folds")
    ap.add_argument("--epochs", type=int, help="training epochs (default: each config's)")
    ap.add_argument("--finetune-epochs", type=int, default=10,
                    help="the one-training baseline's fine-tune per rate, from the dense run (0: none)")
    ap.add_argument("--rates", nargs="+", type=float, default=RATES, help="MRMP's training rates")
    ap.add_argument("--unseen", nargs="+", type=float, default=UNSEEN, help="rates MRMP is evaluated at untrained")
    ap.add_argument("--mode", default="sample", choices=["sample", "all"])
    ap.add_argument("--samples", type=int, default=2, help="rates per step in mode sample")
    ap.add_argument("--always-highest", action=argparse.BooleanOptionalAction, default=True,
                    help="mode sample: the highest rate among every step's rates")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work-dir", default=str(ROOT / "work_dirs" / "multirate"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multirate.json"))
    args = ap.parse_args()
    out_path = Path(args.out)
    # each dataset lands as soon as it is done, beside the datasets an earlier invocation wrote
    out: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    for ds in args.datasets:
        t0 = time.perf_counter()
        out[ds] = _dataset(ds, args)
        out[ds]["meta"] = {
            "command": "python benchmarks/multirate.py", "argv": vars(args), "wall_s": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
            "fingerprint": machine_fingerprint(), "commit": commit,
        }
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({k: v for k, v in out[ds].items() if k != "meta"}, indent=2), flush=True)


if __name__ == "__main__":
    main()
