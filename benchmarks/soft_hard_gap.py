"""Where PMP's soft network and its hard one part (docs/method.md, Schedules: hard tail).

Trains one PMP run of CONFIG (with `--set KEY=VALUE` overrides, e.g. pruning.options.hard_tail=0.25)
and, just before `finalize()`, records every module's output on the test split; then again after
it. Per module: ||soft - hard|| / ||soft||, where the two first differ and how a BatchNorm after it
amplifies the difference; per pruned tensor: its size, the band edge, how many weights sit inside the
sigmoid's transition (|s (|w| - a)| < 5), mean psi inside and outside the band.

    python benchmarks/soft_hard_gap.py configs/sbu_stgcn.yaml --split 1 --rate 0.9 --data-root ../shared/data

Writes benchmarks/results/soft_hard_gap.json, one entry per (config, split, rate, overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from pmp.machine import machine_fingerprint
from pmp.training.checkpoint import atomic_write_json
from pmp.training.config import apply_overrides, load_config, parse_set_options
from pmp.training.trainer import run_experiment

ROOT = Path(__file__).resolve().parents[1]


def slug(key: str) -> str:
    """A folder name for one entry's scratch run."""
    return "".join(c if c.isalnum() or c in "._=-" else "_" for c in key)


def module_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named module's tensor output on `x` (parametrization internals left out), eval mode."""
    outs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: outs.__setitem__(n, o.detach().clone())
                                     if torch.is_tensor(o) else None)
             for name, m in model.named_modules() if name and "parametrizations" not in name]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return outs


@contextmanager
def gap_probe(model: torch.nn.Module, pruner, x: torch.Tensor, gap: dict):
    """Around the run's finalize(): the soft network's picture on entry, the hard one's on exit."""
    # still soft unless a hard tail ran: then there is no soft network left to compare
    tensors = pruner.soft_to_hard()["per_tensor"] if pruner.masks is None else {}
    soft = module_outputs(model, x)
    yield
    hard = module_outputs(model, x)
    gap["modules"] = {n: round(float((soft[n] - hard[n]).norm() / soft[n].norm().clamp_min(1e-12)), 6)
                      for n in soft if n in hard and soft[n].shape == hard[n].shape}
    gap["tensors"] = tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--split", required=True)
    ap.add_argument("--rate", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--run-dir", type=Path, default=ROOT / "work_dirs" / "soft_hard_gap")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soft_hard_gap.json")
    args = ap.parse_args()
    sets = parse_set_options(args.set)
    cfg = apply_overrides(load_config(args.config), {
        "data.root": args.data_root, "data.split": args.split, "pruning.method": "pmp",
        "pruning.rate": args.rate, "train.seed": args.seed, **sets})
    key = f"{args.config.as_posix()} split {args.split} rate {args.rate:g} seed {args.seed}" + \
        "".join(f" {k}={v}" for k, v in sorted(sets.items()))
    t0 = time.perf_counter()
    gap: dict = {}
    # the folder is this script's scratch (the result is the JSON entry): a run there is retrained
    metrics = run_experiment(cfg, args.run_dir / slug(key), fresh=True,
                             around_finish=lambda model, pruner, x: gap_probe(model, pruner, x, gap))
    gap = {"soft_class_avg_acc": metrics["soft_class_avg_acc"], "class_avg_acc": metrics["class_avg_acc"], **gap}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[key] = {**gap, "command": "python benchmarks/soft_hard_gap.py " + " ".join(sys.argv[1:]),
                    "machine": machine_fingerprint(), "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(args.out, results)
    first = next((n for n, d in gap["modules"].items() if d > 0), None)
    print(f"{key}: soft {100 * gap['soft_class_avg_acc']:.2f}%, hard {100 * gap['class_avg_acc']:.2f}%; "
          f"first module that differs: {first} ({gap['modules'].get(first, 0):.3g})")


if __name__ == "__main__":
    main()
