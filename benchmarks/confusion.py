"""Where a backbone's errors go: the confusion matrices of finished runs, summed.

A mean accuracy says how much is lost, not where; on SBU the last points sit in a few class pairs.
Reads every finished run folder (sealed metrics.json) directly under each FOLDER, sums their test
confusion matrices (rows: true class, columns: predicted) and lists each class's errors.

    python benchmarks/confusion.py work_dirs/ablation/sbu/paired-sbu_ddnet/default --out benchmarks/results/confusion_sbu_ddnet.json

Writes OUT: the class names, the summed matrix, the runs read, and per class its test sequences,
errors and where they went.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pmp.experiments.sweep import read_metrics
from pmp.training.checkpoint import atomic_write_json


def summed_confusion(folders: list[Path]) -> dict:
    runs, total, names = [], None, None
    for folder in folders:
        for run in sorted(p for p in folder.iterdir() if p.is_dir()):
            m = read_metrics(run)
            if m is None:
                continue
            if names is not None and m["class_names"] != names:
                raise SystemExit(f"{run}: other classes than the runs before it ({m['class_names']} vs {names})")
            names = m["class_names"]
            c = np.asarray(m["confusion"], dtype=np.int64)
            total = c if total is None else total + c
            runs.append(str(run))
    if total is None:
        raise SystemExit(f"no finished run under {', '.join(map(str, folders))}")
    classes = {name: {"sequences": int(row.sum()), "errors": int(row.sum() - row[i]),
                      "to": {names[j]: int(n) for j, n in enumerate(row) if j != i and n}}
               for i, (name, row) in enumerate(zip(names, total))}
    return {"class_names": names, "confusion": total.tolist(), "classes": classes, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    result = summed_confusion(args.folders)
    atomic_write_json(args.out, {**result, "command": "python benchmarks/confusion.py " + " ".join(sys.argv[1:])})
    for name, c in result["classes"].items():
        print(f"{name}: {c['errors']} of {c['sequences']} wrong" + (f" -> {c['to']}" if c["to"] else ""))
    print(f"{len(result['runs'])} runs -> {args.out}")


if __name__ == "__main__":
    main()
