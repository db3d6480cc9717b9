"""PMP against MP and GMP on every registered backbone, and each backbone's sparse-runtime speed.

For each backbone and dataset it runs (or resumes) a sweep through pmp/experiments: dense, then
pmp, mp, gmp at rates 0.9, 0.98, 0.99; FPHA 1:1 with seeds 0, 1, 2, SBU's 5 folds with seed 0
(configs/<dataset>_<backbone>.yaml; agcn: configs/<dataset>.yaml). The attention GCN's cells are
read from the paper grid's committed results (benchmarks/results/pmp.json, baselines.json: the
same protocol, from benchmarks/paper_table.py) unless `--agcn train`. Then, per backbone at
r = 0.98, the whole-network latency of the sparse runtime (`load_sparse`: the hand-tuned one for
agcn, the generic one otherwise) against dense torch at batch 1 and 64, on random-init weights
pruned by magnitude at FPHA's deployment sizes (latency depends on the sparsity pattern's size,
not on what the weights learned); `--sittings N` times it N times in a row and keeps the medians.
Writes benchmarks/results/backbones.json:

  {"<backbone>": {"weights": N, "fpha": {"dense": A, "pmp": {"0.9": A, ...}, "mp": {...}, "gmp": {...},
                  "train_s": ..., "runs_finished": n, "runs_expected": m, "partial": bool, ...},
                  "sbu": {...}, "speedup_0.98": {"batch1": X, "batch64": Y, ...}, "partial": bool}, ...}

Accuracies are class-averaged, as fractions, means over the finished runs of a cell; a cell with
runs missing is marked by `partial` (and `runs_finished` < `runs_expected`). Finished runs are
skipped, so an interrupted invocation continues where it stopped, on a fresh checkout too: every
finished run is archived in `archive/<backbone>_<dataset>.jsonl` beside the output file and restored
from it before the sweep runs; entries of backbones or datasets not run this time are kept from the
existing file.

    python benchmarks/backbones.py --data-root ../shared/data [--backbones ddnet,stgcn] [--datasets fpha]
    python benchmarks/backbones.py --methods dense --no-speed     # every backbone's dense cells first
    python benchmarks/backbones.py --epochs 1 --seeds 0 --folds 1 --work-dir /tmp/bb --out /tmp/bb/b.json  # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from pmp.data.features import input_layout  # noqa: E402
from pmp.data.fpha import EDGES as HAND_EDGES  # noqa: E402
from pmp.experiments import archive, run_sweep  # noqa: E402
from pmp.experiments.grid import expand_grid, parse_sweep  # noqa: E402
from pmp.experiments.sweep import read_metrics  # noqa: E402
from pmp.export import load_sparse, save_compact  # noqa: E402
from pmp.export.bench import _alternating_times, _machine, magnitude_prune, with_random_batchnorm  # noqa: E402
from pmp.models import create_model, list_models, model_dataset_fields  # noqa: E402
from pmp.training import load_config  # noqa: E402
from pmp.training.config import apply_overrides, parse_set_options  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("pmp", "mp", "gmp")
RATES = (0.9, 0.98, 0.99)
PROTOCOL = {"fpha": {"seeds": [0, 1, 2], "splits": ["1:1"]}, "sbu": {"seeds": [0], "splits": ["1", "2", "3", "4", "5"]}}
#: FPHA's deployment sizes (hands: 21 joints, xyz, one person, 45 classes), for weights and speed; the
#: frames and feature channels come from each backbone's FPHA config (deploy_kwargs).
DEPLOY = dict(num_nodes=21, coords=3, persons=1, num_classes=45)


def base_config(backbone: str, dataset: str) -> Path:
    path = ROOT / "configs" / (f"{dataset}.yaml" if backbone == "agcn" else f"{dataset}_{backbone}.yaml")
    if not path.is_file():
        raise SystemExit(f"{path}: no config for backbone {backbone!r} on {dataset} (add it to configs/)")
    return path


def deploy_kwargs(backbone: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The deployment-size model's kwargs: the FPHA config's model kwargs (with `overrides`, the
    `--set` keys) on FPHA's sizes, with the input its preprocessing gives (frames, or temporal
    chunks, by feature channels)."""
    cfg = apply_overrides(load_config(base_config(backbone, "fpha")), overrides or {})
    p = cfg.preprocess
    layout = input_layout(list(p.features), DEPLOY["num_nodes"], DEPLOY["coords"], DEPLOY["persons"], list(p.motion_steps))
    kwargs = dict(num_nodes=DEPLOY["num_nodes"], num_classes=DEPLOY["num_classes"], in_frames=p.chunks or p.frames,
                  in_channels=layout.channels, **cfg.model.kwargs)
    if "edges" in model_dataset_fields(backbone):
        kwargs["edges"] = [list(e) for e in HAND_EDGES]
    return kwargs


def sweep_spec(backbone: str, dataset: str, work_dir: Path, seeds: list[int], splits: list[str],
               epochs: int | None, overrides: dict[str, Any] | None = None) -> Any:
    return parse_sweep({
        "name": f"{backbone}_{dataset}", "base": str(base_config(backbone, dataset)),
        "out": str(work_dir / f"{backbone}_{dataset}"),
        "grid": {"method": ["dense", *METHODS], "rate": list(RATES), "seed": seeds, "split": splits},
        "overrides": {**(overrides or {}), **({"train.epochs": epochs} if epochs else {})},
    })


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def collect(spec: Any, dataset: str) -> dict[str, Any]:
    """The dataset entry from a sweep's finished runs: cell means, run counts, training times;
    partial when runs are missing or the seeds/folds are fewer than the protocol's."""
    runs = expand_grid(spec)
    done = [(r, m) for r in runs if (m := read_metrics(spec.out / r.run_id)) is not None]
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for r, m in done:
        key = ("dense", "0") if m["method"] == "dense" else (m["method"], f"{m['rate']:g}")
        by_cell.setdefault(key, []).append(m)
    acc = {k: _mean([m["class_avg_acc"] for m in v]) for k, v in by_cell.items()}
    entry: dict[str, Any] = {"dense": acc.get(("dense", "0"))}
    for method in METHODS:
        entry[method] = {f"{r:g}": acc[(method, f"{r:g}")] for r in RATES if (method, f"{r:g}") in acc}
    walls = {k: [m["wall_s"] for m in v] for k, v in by_cell.items()}
    entry.update(
        train_s=_mean(walls.get(("dense", "0"), [])),
        train_s_pruned=_mean([w for k, v in walls.items() if k[0] != "dense" for w in v]),
        epochs=done[0][1]["epochs"] if done else None,
        exact_count=all(m["exact_count"] for _, m in done),
        runs_per_cell={f"{k[0]}@{k[1]}": len(v) for k, v in sorted(by_cell.items())},
        runs_finished=len(done), runs_expected=len(runs), seeds=spec.grid["train.seed"],
        splits=spec.grid["data.split"], source=f"sweep {spec.out}",
    )
    full = PROTOCOL[dataset]
    entry["partial"] = len(done) < len(runs) or (entry["seeds"], entry["splits"]) != (full["seeds"], full["splits"])
    return entry


def from_paper_grid(dataset: str) -> dict[str, Any]:
    """agcn's entry from the paper grid's committed results (benchmarks/paper_table.py)."""
    pmp = json.loads((RESULTS / "pmp.json").read_text())[dataset]
    base = json.loads((RESULTS / "baselines.json").read_text())[dataset]
    cells = {"pmp": pmp, "mp": base["mp"], "gmp": base["gmp"]}
    entry: dict[str, Any] = {"dense": base["dense"]["0"]["class_avg_acc"]}
    for method, by_rate in cells.items():
        entry[method] = {f"{r:g}": by_rate[f"{r:g}"]["class_avg_acc"] for r in RATES if f"{r:g}" in by_rate}
    n = {f"{m}@{r}": c["n_runs"] for m, by_rate in cells.items() for r, c in by_rate.items() if float(r) in RATES}
    entry.update(
        train_s=base["dense"]["0"]["wall_s"],
        train_s_pruned=_mean([c["wall_s"] for by_rate in cells.values() for r, c in by_rate.items() if float(r) in RATES]),
        epochs=base["dense"]["0"]["epochs"], runs_per_cell={"dense@0": base["dense"]["0"]["n_runs"], **n},
        partial=False, source="benchmarks/results/pmp.json + baselines.json (python benchmarks/paper_table.py)",
    )
    return entry


def speedup(backbone: str, repeats: int, block: int, seed: int = 0,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whole-network latency, dense torch vs `load_sparse`, at r = 0.98 and batch 1 and 64."""
    kwargs = deploy_kwargs(backbone, overrides)
    torch.manual_seed(seed)
    model = with_random_batchnorm(create_model(backbone, **kwargs).eval())
    masks = magnitude_prune(model, 0.98)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        module = load_sparse(save_compact(model, {"model": backbone, "kwargs": kwargs}, masks, Path(tmp) / "m.pmp"))
        gen = torch.Generator().manual_seed(seed)
        for b in (1, 64):
            x = torch.randn(b, *module.input_shape, generator=gen)
            with torch.inference_mode():
                err = float((model(x) - module(x)).abs().max())
                t = _alternating_times({"dense": lambda: model(x), "sparse": lambda: module(x)}, repeats, block)
            med = {k: float(np.median(v)) for k, v in t.items()}
            out[f"batch{b}"] = round(med["dense"] / med["sparse"], 2)
            out[f"batch{b}_us"] = {k: round(v, 1) for k, v in med.items()}
            out[f"batch{b}_max_abs_diff"] = err
    out.update(runtime=type(module).__name__, repeats=repeats, block=block,
               file_bytes=module.file_bytes, prunable_kept=int(sum(int(m.sum()) for m in masks.values())))
    return out


def speedup_sittings(backbone: str, repeats: int, block: int, sittings: int,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`speedup` `sittings` times in a row (the VM has slow phases: a ratio near its target is read
    from several): batch1/batch64 are the medians of the sittings' ratios, each sitting's kept."""
    runs = [speedup(backbone, repeats, block, overrides=overrides) for _ in range(sittings)]
    if sittings == 1:
        return runs[0]
    out = dict(runs[0])
    for b in (1, 64):
        out[f"batch{b}"] = round(float(np.median([r[f"batch{b}"] for r in runs])), 2)
        out[f"batch{b}_us"] = {k: round(float(np.median([r[f"batch{b}_us"][k] for r in runs])), 1) for k in ("dense", "sparse")}
        out[f"batch{b}_max_abs_diff"] = max(r[f"batch{b}_max_abs_diff"] for r in runs)
    out["sittings"] = [{"batch1": r["batch1"], "batch64": r["batch64"]} for r in runs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--backbones", default=",".join(list_models()))
    ap.add_argument("--datasets", default="fpha,sbu")
    ap.add_argument("--seeds", help="FPHA seeds (default 0,1,2)")
    ap.add_argument("--folds", help="SBU folds (default 1,2,3,4,5)")
    ap.add_argument("--epochs", type=int, help="override every run's epochs (smoke runs)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--work-dir", default=str(ROOT / "work_dirs" / "backbones"))
    ap.add_argument("--out", default=str(RESULTS / "backbones.json"))
    ap.add_argument("--agcn", choices=["results", "train"], default="results",
                    help="agcn's accuracies: from the paper grid's result files (default) or trained here")
    ap.add_argument("--no-train", action="store_true", help="only collect finished runs (and time)")
    ap.add_argument("--methods", help="train only these methods now, e.g. dense (default: dense and all of "
                                      f"{','.join(METHODS)}); the entry still reports the whole protocol")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="only time the sparse runtime (speedup_0.98); the accuracy entries stay as they are")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--sittings", type=int, default=1,
                    help="time each backbone this many times in a row; speedup_0.98 takes the medians (and lists each)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and numba threads for the latency (default 1: the generic runtime alternates torch's and "
                         "numba's OpenMP pools, which spin-wait on each other when the cores are shared)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config key set in every backbone's configs (a variant, e.g. model.kwargs.temporal=3); "
                         "needs an --out other than the default, so a variant never replaces the backbones' entries")
    args = ap.parse_args()
    overrides = parse_set_options(args.set)
    if overrides and Path(args.out).resolve() == (RESULTS / "backbones.json").resolve():
        raise SystemExit("--set: write the variant elsewhere (--out benchmarks/results/<name>.json)")

    if args.speed_only and args.no_speed:
        raise SystemExit("--speed-only and --no-speed: nothing to do")
    backbones = args.backbones.split(",")
    unknown = sorted(set(backbones) - set(list_models()))
    if unknown:
        raise SystemExit(f"--backbones: unknown {unknown} (registered: {list_models()})")
    if overrides and "agcn" in backbones and args.agcn == "results" and not args.speed_only:
        raise SystemExit("--set with agcn: its accuracies come from the paper grid of the default config "
                         "(use --agcn train, or --speed-only)")
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    start = time.perf_counter()
    for backbone in backbones:
        entry = result.setdefault(backbone, {})
        entry["weights"] = sum(p.numel() for p in create_model(backbone, **deploy_kwargs(backbone, overrides)).parameters())
        for dataset in [] if args.speed_only else args.datasets.split(","):
            if dataset not in PROTOCOL:
                raise SystemExit(f"--datasets: unknown {dataset!r} (fpha, sbu)")
            if backbone == "agcn" and args.agcn == "results":
                entry[dataset] = from_paper_grid(dataset)
                continue
            seeds = [int(s) for s in args.seeds.split(",")] if args.seeds and dataset == "fpha" else PROTOCOL[dataset]["seeds"]
            splits = args.folds.split(",") if args.folds and dataset == "sbu" else PROTOCOL[dataset]["splits"]
            spec = sweep_spec(backbone, dataset, Path(args.work_dir), seeds, splits, args.epochs, overrides)
            with archive.kept(out_path.parent / "archive" / f"{spec.name}.jsonl", spec.out):
                if not args.no_train:
                    run_sweep(spec, workers=args.workers, data_root=args.data_root,
                              only={"method": args.methods.split(",")} if args.methods else None)
            entry[dataset] = collect(spec, dataset)
        if not args.no_speed:
            torch.set_num_threads(args.threads)
            numba.set_num_threads(args.threads)
            entry["speedup_0.98"] = speedup_sittings(backbone, args.repeats, args.block, args.sittings, overrides)
        for dataset in PROTOCOL:
            entry.setdefault(dataset, {"dense": None, "pmp": {}, "mp": {}, "gmp": {}, "partial": True})
        entry["partial"] = any(entry[d].get("partial", True) for d in PROTOCOL)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")  # after each backbone: nothing finished is lost
    result_meta = {"machine": _machine(), "load_avg": list(os.getloadavg()), "wall_s": round(time.perf_counter() - start, 1),
                   "command": "python " + " ".join(sys.argv)}
    for backbone in backbones:  # "meta": the invocation that timed speedup_0.98; "collected": the latest one
        if not args.speed_only:
            result[backbone]["collected"] = copy.deepcopy(result_meta)
        if not args.no_speed:
            result[backbone]["meta"] = copy.deepcopy(result_meta)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    for backbone in backbones:
        e = result[backbone]
        cells = {d: (e[d].get("dense"), e[d].get("pmp", {}).get("0.98")) for d in PROTOCOL}
        print(f"{backbone}: {e['weights']} weights, dense/pmp@0.98 {cells}, speedup {e.get('speedup_0.98', {})}")
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
