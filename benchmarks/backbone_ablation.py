"""Ablation of the default dense backbone: each input feature, augmentation and architecture choice
of configs/fpha.yaml and configs/sbu.yaml switched off (or changed) one at a time, on both datasets.

Writes benchmarks/results/backbone_ablation.json (per dataset and variant: the overrides, every
run, mean, std and 95% t-interval) and docs/results/backbone_ablation.md (the table docs/results.md
shows). Runs live in work_dirs/ablation/<dataset>/<variant>/ and are not retrained when finished,
so an interrupted ablation continues where it stopped.

    python benchmarks/backbone_ablation.py --data-root ../shared/data [--workers 2] [--only fpha]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_table import RESULTS, machine  # noqa: E402

from pmp.experiments import SweepSpec, run_sweep  # noqa: E402
from pmp.experiments.stats import mean_ci  # noqa: E402
from pmp.experiments.sweep import read_metrics  # noqa: E402
from pmp.training.config import load_config  # noqa: E402

CONFIGS = {"fpha": ROOT / "configs/fpha.yaml", "sbu": ROOT / "configs/sbu.yaml"}
PROTOCOL = {"fpha": {"train.seed": [0, 1, 2], "data.split": ["1:1"]},
            "sbu": {"train.seed": [0], "data.split": ["1", "2", "3", "4", "5"]}}


def variants(name: str) -> dict[str, dict]:
    """Variant -> overrides of the dataset's default config. Features are removed one at a time from
    the default list; the other choices are switched to their alternative."""
    cfg = load_config(CONFIGS[name])
    feats = list(cfg.preprocess.features)
    out: dict[str, dict] = {"default": {}}
    for f in feats:
        if len(feats) > 1:
            out[f"- {f}"] = {"preprocess.features": [g for g in feats if g != f]}
    for f in ("motion", "bone", "angle"):
        if f not in feats:
            out[f"+ {f}"] = {"preprocess.features": feats + [f]}
    aug = cfg.augment
    for key, on in (("swap", 0.5), ("rotate", 15.0), ("scale", 0.1), ("time_warp", 0.2)):
        value = getattr(aug, key)
        if name == "fpha" and key == "swap":
            continue  # one person: nothing to swap
        out[f"augment.{key}={0 if value else on:g}"] = {f"augment.{key}": 0.0 if value else on}
    blocks = cfg.model.kwargs.get("blocks", 1)
    out[f"blocks={1 if blocks > 1 else 3}"] = {"model.kwargs.blocks": 1 if blocks > 1 else 3}
    return out


def run_variant(name: str, variant: str, overrides: dict, args: argparse.Namespace) -> dict:
    spec = SweepSpec(name=f"ablation-{name}", base=CONFIGS[name], out=ROOT / "work_dirs/ablation" / name / _slug(variant),
                     grid={"pruning.method": ["dense"], **PROTOCOL[name]}, overrides=overrides)
    result = run_sweep(spec, workers=args.workers, data_root=args.data_root, progress=False)
    runs = [m for m in (read_metrics(spec.out / o.run_id) for o in result.runs) if m is not None]
    ci = mean_ci([m["class_avg_acc"] for m in runs])
    return {"overrides": overrides, "class_avg_acc": ci.mean, "std": ci.std, "ci95": [ci.lo, ci.hi], "n_runs": ci.n,
            "wall_s_per_run": mean_ci([m["wall_s"] for m in runs]).mean, "params": runs[0]["params"],
            "runs": [{"seed": m["seed"], "fold": m["split"], "class_avg_acc": m["class_avg_acc"]} for m in runs],
            "failed": [o.run_id for o in result.failed]}


def _slug(variant: str) -> str:
    return "".join(c if c.isalnum() or c in ".=-" else "_" for c in variant.replace("- ", "no_").replace("+ ", "add_"))


def table(results: dict) -> str:
    lines = ["| dataset | variant | class-avg acc % (mean +- std) | 95% CI | vs default | runs | s/run | weights |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in results.items():
        base = res["default"]["class_avg_acc"]
        for variant, r in res.items():
            lo, hi = r["ci95"]
            diff = "" if variant == "default" else f"{100 * (r['class_avg_acc'] - base):+.2f}"
            lines.append(f"| {name} | {variant} | {100 * r['class_avg_acc']:.2f} +- {100 * r['std']:.2f} | "
                         f"{100 * lo:.1f}-{100 * hi:.1f} | {diff} | {r['n_runs']} | {r['wall_s_per_run']:.0f} | {r['params']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=sorted(CONFIGS))
    args = ap.parse_args()
    path = RESULTS / "backbone_ablation.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.pop("meta", None)
    t0 = time.perf_counter()
    for name in CONFIGS:
        if args.only and name != args.only:
            continue
        results[name] = {}
        for variant, overrides in variants(name).items():
            results[name][variant] = r = run_variant(name, variant, overrides, args)
            print(f"{name} {variant}: {100 * r['class_avg_acc']:.2f} +- {100 * r['std']:.2f} ({r['n_runs']} runs)", flush=True)
    md = table(results)
    (ROOT / "docs/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs/results/backbone_ablation.md").write_text(md)
    results["meta"] = {"machine": machine(), "wall_s": round(time.perf_counter() - t0, 1),
                       "protocol": PROTOCOL, "command": "python benchmarks/backbone_ablation.py"}
    path.write_text(json.dumps(results, indent=2))
    print(md)


if __name__ == "__main__":
    main()
