"""Does averaging over both person orders at test time help on SBU (issue 11)? A measurement of an
idea, not a feature: the default trains with person-order swap (augment.swap 0.5), so a test
sequence can be read in either order; this scores each dense run of `configs/sbu.yaml` on the test
split as stored ("plain"), with the persons exchanged ("swapped"), and with the two softmax outputs
summed ("tta"), and pairs tta with plain by fold and seed.

    python benchmarks/swap_tta.py --data-root ../shared/data [--config configs/sbu.yaml] [--folds 1,2,3,4,5] [--seeds 0,1,2]

Trains (or reuses finished) runs under work_dirs/swap_tta/<config name>/ and writes the config's entry
of benchmarks/results/swap_tta.json (other configs' entries are kept): per run the three accuracies
and its training wall time; the means; tta minus plain (mean, 95% t-interval and bootstrap interval
over the pairs, wins / ties / losses).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pmp.data.preprocess import swap_persons
from pmp.experiments.stats import mean_ci, paired_diff
from pmp.machine import machine_fingerprint
from pmp.training.config import apply_overrides, load_config
from pmp.training.metrics import classification_metrics
from pmp.training.trainer import load_trained_model, predict_logits, run_experiment, split_data

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--config", type=Path, default=ROOT / "configs/sbu.yaml", help="a two-person config")
    ap.add_argument("--folds", default="1,2,3,4,5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs/swap_tta")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/swap_tta.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.config = args.config.resolve()
    base = load_config(args.config)
    t0 = time.perf_counter()
    runs = []
    for fold in args.folds.split(","):
        for seed in map(int, args.seeds.split(",")):
            cfg = apply_overrides(base, {"data.split": fold, "train.seed": seed, "data.root": args.data_root})
            run_dir = args.work_dir / args.config.stem / f"f{fold}_s{seed}"
            metrics = run_experiment(cfg, run_dir)
            model = load_trained_model(run_dir)[0]
            data = split_data(cfg, args.data_root)
            plain = predict_logits(model, data.x_test)
            swapped = predict_logits(model, swap_persons(data.x_test))

            def acc(logits: torch.Tensor) -> float:
                return classification_metrics(data.y_test.numpy(), logits.argmax(1).numpy(), data.num_classes).class_avg_acc

            runs.append({"fold": fold, "seed": seed, "plain": acc(plain), "swapped": acc(swapped),
                         "tta": acc(plain.softmax(1) + swapped.softmax(1)), "wall_s": metrics["wall_s"]})
            print(f"fold {fold} seed {seed}: plain {100 * runs[-1]['plain']:.2f}, tta {100 * runs[-1]['tta']:.2f}", flush=True)
    diff = paired_diff([r["tta"] for r in runs], [r["plain"] for r in runs])
    config = str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config)
    out = {"command": f"python benchmarks/swap_tta.py --config {config} --folds {args.folds} --seeds {args.seeds}",
           "machine": machine_fingerprint(), "wall_s": round(time.perf_counter() - t0, 1),
           "means": {k: asdict(mean_ci([r[k] for r in runs])) for k in ("plain", "swapped", "tta")},
           "tta_minus_plain": asdict(diff), "runs": runs}
    every = json.loads(args.out.read_text()) if args.out.is_file() else {}
    every[config] = out
    args.out.write_text(json.dumps(every, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("means", "tta_minus_plain")}, indent=1))


if __name__ == "__main__":
    main()
