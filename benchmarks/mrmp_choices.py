"""The design choices of mrmp, measured on a short FPHA run (docs/method.md, "Multi-rate PMP").

1. The loss: every training rate's network at every step (mode "all") against one or two rates
   drawn per step ("sample"; "sample2_highest": the highest rate and one drawn): accuracy at
   every rate, against PMP runs at 0.9 and 0.98 of the same length, and the training-step cost
   over PMP's (thread CPU time, interleaved, as in pmp_cost.py; the runs' wall times too, which
   a shared machine makes noisy).
2. BatchNorm statistics per rate: each mrmp network evaluated with the statistics training left
   (a mix over the rates trained) and recalibrated on the training inputs for that rate; the same
   recalibration applied to the single-rate PMP networks tells what recalibration does by itself.
3. One export file per rate against one file holding every rate: the per-rate .pmp sizes, and
   the size of a bundle (the densest rate's .pmp plus, per kept weight, a byte giving the highest
   rate that keeps it, plus every other rate's BatchNorm affines), estimated from the same codec.

    python benchmarks/mrmp_choices.py --data-root ../shared/data [--config C] [--epochs 30]

Writes benchmarks/results/mrmp_choices.json (or --out). Runs live in work_dirs/mrmp_choices and
are reused when finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from pmp.export.format import inference_state, save_compact
from pmp.models import create_model
from pmp.pruning.base import create_pruner
from pmp.pruning.mrmp import nested_masks, recalibrate_batchnorm
from pmp.training import apply_overrides, load_config, run_experiment
from pmp.training.multirate import LATENT, apply_rate
from pmp.training.trainer import evaluate, load_trained_model, split_data

ROOT = Path(__file__).resolve().parents[1]
RATES = [0.5, 0.7, 0.9, 0.95, 0.98, 0.99]
UNSEEN = [0.8, 0.93, 0.97]
VARIANTS = {"all": {"mode": "all"}, "sample1": {"mode": "sample", "samples": 1},
            "sample2": {"mode": "sample", "samples": 2},
            "sample2_highest": {"mode": "sample", "samples": 2, "always_highest": True}}
PMP_RATES = [0.9, 0.98]


def _data(cfg):
    """(x_train, y_train, x_test, y_test, classes) exactly as the trainer builds them."""
    d = split_data(cfg)
    return d.x_train, d.y_train, d.x_test, d.y_test, d.num_classes


def _bundle_bytes(model, latent, targets: list[str], scope: str, per_rate_files: dict[float, int]) -> int:
    """Size of one file holding every rate (see the module docstring), from its parts."""
    rates = sorted(per_rate_files)
    densest = per_rate_files[rates[0]]
    lat = {n: latent[n] for n in targets}
    masks = {r: nested_masks(lat, r, scope) for r in rates}
    levels = 0
    for n in targets:  # per weight kept at the densest rate: how many rates keep it (1..K)
        count = sum(masks[r][n].to(torch.uint8) for r in rates)
        levels += len(zlib.compress(count[masks[rates[0]][n]].numpy().astype(np.uint8).tobytes(), 9))
    bn = sum(v.numel() * 4 for k, v in inference_state(model).items() if k.endswith((".scale", ".shift")))
    return densest + levels + (len(rates) - 1) * bn


def _step_costs(cfg, kwargs: dict, x: torch.Tensor, y: torch.Tensor, blocks: int = 12, steps: int = 4
                ) -> dict[str, float]:
    """Training-step cost of each mrmp variant over PMP's (r = 0.98): one process, the models'
    blocks of `steps` steps interleaved, thread CPU time (fair on a shared machine), median of the
    per-block ratios; batch = the first 64 training sequences."""
    xb, yb = x[:64], y[:64]

    def stepper(method: str, rate: float, options: dict):
        torch.manual_seed(0)
        model = create_model(cfg.model.name, **kwargs)
        pruner = create_pruner(method, model, rate, scope=cfg.pruning.scope, **options)
        opt = torch.optim.Adam(model.parameters(), 1e-3)

        def step() -> None:
            loss = pruner.task_loss(lambda: nn.functional.cross_entropy(model(xb), yb)) + pruner.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            pruner.step(0.75)

        return step

    runs = {"pmp": stepper("pmp", 0.98, {})}
    runs |= {name: stepper("mrmp", 0.0, {"rates": RATES, **o}) for name, o in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in runs.values():  # warm-up (numba compilation, allocator)
        step()
    for _ in range(blocks):
        for name, step in runs.items():
            t0 = time.thread_time()
            for _ in range(steps):
                step()
            times[name].append(time.thread_time() - t0)
    pmp = times.pop("pmp")
    return {name: float(np.median([a / b for a, b in zip(t, pmp)])) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "fpha.yaml"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", default=str(ROOT / "work_dirs" / "mrmp_choices"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mrmp_choices.json"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    base = apply_overrides(load_config(args.config), {"data.root": args.data_root, "train.epochs": args.epochs,
                                                       "train.seed": args.seed})
    work = Path(args.work_dir)
    x_train, y_train, x_test, y_test, classes = _data(base)

    def acc(model) -> float:
        return evaluate(model, x_test, y_test, classes).class_avg_acc

    out: dict = {"command": "python benchmarks/mrmp_choices.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                         vars(args).items() if k not in ("out",)),
                 "config": Path(args.config).name,
                 "config_sha1": hashlib.sha1(Path(args.config).read_bytes()).hexdigest(), "epochs": args.epochs, "seed": args.seed, "rates": RATES,
                 "unseen": UNSEEN,
                 "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                          cwd=ROOT).stdout.strip()}
    pmp: dict = {}
    for rate in PMP_RATES:
        cfg = apply_overrides(base, {"pruning.method": "pmp", "pruning.rate": rate})
        m = run_experiment(cfg, work / f"pmp_r{rate:g}")
        model, _ = load_trained_model(work / f"pmp_r{rate:g}")
        recalibrate_batchnorm(model, [x_train[i : i + 256] for i in range(0, len(x_train), 256)])
        pmp[f"{rate:g}"] = {"class_avg_acc": m["class_avg_acc"], "recalibrated": acc(model), "wall_s": m["wall_s"]}
    pmp_wall = float(np.mean([v["wall_s"] for v in pmp.values()]))
    spec = json.loads((work / f"pmp_r{PMP_RATES[0]:g}" / "model.json").read_text())
    costs = _step_costs(base, spec["kwargs"], x_train, y_train)
    out["pmp"] = pmp
    out["variants"] = {}
    for name, options in VARIANTS.items():
        cfg = apply_overrides(base, {"pruning.method": "mrmp", "pruning.options": {
            "rates": RATES, "eval_rates": sorted(RATES + UNSEEN), **options}})
        run = work / f"mrmp_{name}"
        m = run_experiment(cfg, run)
        spec = json.loads((run / "model.json").read_text())
        latent = load_file(str(run / LATENT))
        targets = list(load_file(str(run / "masks.safetensors")))
        model = create_model(spec["model"], **spec["kwargs"])
        per_rate = {}
        for key, served in m["rates"].items():
            masks = nested_masks({n: latent[n] for n in targets}, served["rate"], cfg.pruning.scope)
            apply_rate(model, latent, masks, None)
            per_rate[key] = {"seen": served["seen"], "recalibrated": served["class_avg_acc"],
                             "training_statistics": acc(model.eval())}
        out["variants"][name] = {"options": options, "step_cost_ratio": costs[name], "wall_s": m["wall_s"],
                                 "wall_ratio": m["wall_s"] / pmp_wall, "rates": per_rate}
        if name == "sample1":  # export sizes: one file per rate against one file for every rate
            sizes: dict[float, int] = {}
            with tempfile.TemporaryDirectory() as tmp:
                for rate in RATES:
                    masks = nested_masks({n: latent[n] for n in targets}, rate, cfg.pruning.scope)
                    apply_rate(model, latent, masks, x_train)
                    path = save_compact(model.eval(), {**spec, "rate": rate}, masks, Path(tmp) / f"r{rate:g}.pmp")
                    sizes[rate] = path.stat().st_size
                bundle = _bundle_bytes(model, latent, targets, cfg.pruning.scope, sizes)
            out["export_bytes"] = {"per_rate": {f"{r:g}": s for r, s in sizes.items()},
                                   "all_per_rate_files": sum(sizes.values()), "one_bundle_estimate": bundle,
                                   "latent_safetensors": (run / LATENT).stat().st_size}
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
