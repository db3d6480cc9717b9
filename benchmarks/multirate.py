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

Per rate the file also keeps every unit's accuracy (`per_run`) and MRMP minus PMP paired by unit
(`mrmp_minus_pmp`: mean, 95% t-interval, wins/ties/losses). Written to benchmarks/results/multirate.json,
it also renders docs/results/multirate/multirate_<dataset>.png (accuracy vs rate, MRMP's unseen rates
hollow) and docs/method.md's block between the multirate markers (`--report-only`: only that).
Runs live in --work-dir/<dataset> (resumable: finished runs are kept); the sweep report goes to
--work-dir/<dataset>/report.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from pmp.experiments import parse_sweep, report, run_sweep
from pmp.experiments.stats import paired_diff
from pmp.experiments.sweep import read_metrics
from pmp.machine import machine_fingerprint
from pmp.pruning.masks import topk_masks
from pmp.pruning.targets import select_targets
from pmp.training import load_config
from pmp.training.config import parse_set_options
from pmp.training.trainer import evaluate, load_trained_model, split_data

ROOT = Path(__file__).resolve().parents[1]
RATES = [0.5, 0.7, 0.9, 0.95, 0.98, 0.99]
UNSEEN = [0.8, 0.93, 0.97]
FOLDS = ["1", "2", "3", "4", "5"]
PLOTS = ROOT / "docs" / "results" / "multirate"  # accuracy-vs-rate plot per dataset
DOC = ROOT / "docs" / "method.md"  # its block between START and END is generated from the results file
START, END = "<!-- multirate:start -->", "<!-- multirate:end -->"


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
    d = split_data(cfg)
    return d.x_test, d.y_test, d.num_classes


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
    # rate -> method -> unit (seed and split) -> accuracy: methods are paired on the unit
    cells: dict[str, dict[str, dict[str, float]]] = {f"{r:g}": {} for r in rates}
    wall: dict[str, list[float]] = {"mrmp": [], "pmp": []}
    for m in runs:
        method, unit = m["method"], f"s{m['seed']}/{m['split']}"
        if method in wall:
            wall[method].append(m["wall_s"])
        if method == "mrmp":
            for key, v in m["rates"].items():
                cells[key].setdefault("mrmp", {})[unit] = v["class_avg_acc"]
        elif method == "pmp":
            cells[f"{m['rate']:g}"].setdefault("pmp", {})[unit] = m["class_avg_acc"]
        elif method == "dense":
            for key, a in _magnitude_pruned(m["_dir"], rates).items():
                cells[key].setdefault("mp_one_training", {})[unit] = a
            for t in _finetunes(dataset, args, m) if args.finetune_epochs else []:
                cells[f"{t['rate']:g}"].setdefault("mp_one_training_finetuned", {})[unit] = t["class_avg_acc"]
    report(spec.out)
    seen = set(args.rates)
    return {
        "cost_ratio": statistics.fmean(wall["mrmp"]) / statistics.fmean(wall["pmp"]),
        "mrmp_wall_s": _mean(wall["mrmp"]), "pmp_wall_s": _mean(wall["pmp"]), "epochs": epochs,
        "finetune_epochs": args.finetune_epochs, "runs": len(runs), "sweep_wall_s": round(time.perf_counter() - t0, 1),
        "units": args.seeds if dataset == "fpha" else args.folds,
        "rates": {key: {**{k: _mean(list(v.values())) for k, v in c.items()}, "seen": float(key) in seen,
                        "mrmp_minus_pmp": _paired(c.get("mrmp", {}), c.get("pmp", {})), "per_run": c}
                  for key, c in cells.items()},
    }


def _paired(a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
    """a - b in accuracy points over the units both have: mean, 95% t-interval, wins/ties/losses."""
    units = sorted(set(a) & set(b))
    if not units:
        return None
    d = paired_diff([100 * a[u] for u in units], [100 * b[u] for u in units])
    ci = [d.lo, d.hi] if len(units) > 1 else None
    return {"pairs": len(units), "mean": d.mean, "ci95": ci, "wins_ties_losses": [d.wins, d.ties, d.losses]}


LABELS = {"mrmp": "MRMP (one training)", "pmp": "PMP (one run per rate)",
          "mp_one_training": "dense + magnitude, no fine-tune", "mp_one_training_finetuned": "dense + magnitude + fine-tune"}


def render(results: dict[str, Any], plot_dir: Path = PLOTS, doc: Path = DOC) -> None:
    """The accuracy-vs-rate plot per dataset (MRMP's unseen rates hollow) and docs/method.md's
    generated block, both from the results file alone."""
    from pmp.experiments import plots

    lines = [START, ""]
    for ds in (d for d in ("fpha", "sbu") if d in results):
        r, meta = results[ds], results[ds]["meta"]
        keys = sorted(r["rates"], key=float)
        curves = {}
        for method, label in LABELS.items():
            have = [k for k in keys if r["rates"][k].get(method) is not None]
            per = [list(r["rates"][k]["per_run"][method].values()) for k in have]
            curves[label] = ([float(k) for k in have], [100 * statistics.fmean(v) for v in per],
                             [100 * statistics.stdev(v) if len(v) > 1 else math.nan for v in per])
        unseen = {LABELS["mrmp"]: {float(k) for k in keys if not r["rates"][k]["seen"]}}
        path = plots.accuracy_vs_density(curves, None, plot_dir / f"multirate_{ds}.png",
                                         f"{ds.upper()}: one MRMP training vs a PMP run per rate", unseen)
        units = "seeds " + ", ".join(map(str, r["units"])) if ds == "fpha" else "folds " + ", ".join(r["units"])
        lines += [f"**{ds.upper()}** ({units}; {r['epochs']} epochs per training, fine-tune {r['finetune_epochs']} "
                  f"epochs per rate; {r['runs']} runs, {r['sweep_wall_s'] / 60:.1f} min with 2 workers on "
                  f"{meta['fingerprint']['cpu_model']}, {meta['fingerprint']['cores']} cores, commit {meta['commit']}). "
                  f"MRMP's training costs **{r['cost_ratio']:.2f}x** one PMP run ({r['mrmp_wall_s']:.0f} s against "
                  f"{r['pmp_wall_s']:.0f} s, mean training wall times of the same sweep). Class-averaged accuracy %, "
                  "means over the units; MRMP minus PMP paired by unit with its 95% t-interval; *italic* rates were "
                  "not trained at:", "",
                  "| rate | MRMP | PMP | MRMP - PMP | 95% CI | wins/ties/losses | dense + MP | dense + MP + fine-tune |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k in keys:
            c = r["rates"][k]
            pct = lambda v: "" if v is None else f"{100 * v:.2f}"  # noqa: E731
            d = c.get("mrmp_minus_pmp")
            diff = f"{d['mean']:+.2f}" if d else ""
            ci = f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d and d["ci95"] else ""
            wtl = " / ".join(map(str, d["wins_ties_losses"])) if d else ""
            rate = k if c["seen"] else f"*{k}*"
            lines.append(f"| {rate} | {pct(c.get('mrmp'))} | {pct(c.get('pmp'))} | {diff} | {ci} | {wtl} | "
                         f"{pct(c.get('mp_one_training'))} | {pct(c.get('mp_one_training_finetuned'))} |")
        lines += ["", f"![{ds} accuracy vs rate]({path.relative_to(doc.parent).as_posix()})", ""]
    lines.append(END)
    text = doc.read_text()
    if START in text:
        head, rest = text.split(START, 1)
        doc.write_text(head + "\n".join(lines) + rest.split(END, 1)[1])
    else:
        raise SystemExit(f"{doc}: no {START} marker to write the multirate block at")


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
    ap.add_argument("--report-only", action="store_true", help="render the plots and docs/method.md's block from --out")
    args = ap.parse_args()
    out_path = Path(args.out)
    # each dataset lands as soon as it is done, beside the datasets an earlier invocation wrote
    out: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if args.report_only:
        return render(out)
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
    if out_path.resolve() == (ROOT / "benchmarks" / "results" / "multirate.json").resolve():
        render(out)  # the docs follow the committed results file only, not a scratch --out


if __name__ == "__main__":
    main()
