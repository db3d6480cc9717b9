"""What each part of PMP contributes (issue 12): configs/sweeps/ablation.yaml (FPHA, 5 seeds) and
configs/sweeps/ablation_sbu.yaml (SBU, 5 folds x 3 seeds), each PMP option moved one at a time
around the default (`pmp@name` variants), at rates 0.9, 0.98 and 0.99.

Runs (or resumes) the sweeps, then writes
  benchmarks/results/ablation.csv    one row per finished run, with a column per ablated option
                                     holding the value that run used (the default where not moved)
  benchmarks/results/ablation.json   machine, command, sweep wall times, runs, failures
  docs/results/<sweep name>/         `pmp report`: tables and the paired differences of the default
                                     PMP minus every variant (paired.csv) over shared seeds and folds

    python benchmarks/ablation.py --data-root ../shared/data [--workers 2] [--only ablation]

`--sweeps` and `--results` run other sweep files into other folders (a smoke run with tiny settings).
Finished runs are skipped, so an interrupted invocation continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_table import RESULTS, machine  # noqa: E402

from pmp.experiments import load_sweep, report, run_sweep  # noqa: E402
from pmp.pruning.pmp import PMP  # noqa: E402
from pmp.training.config import load_config  # noqa: E402

SWEEPS = [ROOT / "configs/sweeps/ablation.yaml", ROOT / "configs/sweeps/ablation_sbu.yaml"]
#: PMP's options that the ablation moves; `scope` is pruning.scope, the others pruning.options.*
OPTIONS = ["lam", "alignment", "prior", "edge", "ramp", "scope", "s_start", "s_end"]
RUN_COLUMNS = ["dataset", "variant", "rate", "seed", "fold", "class_avg_acc", "overall_acc", "achieved_rate",
               "epochs", "wall_s", "run"]
COLUMNS = RUN_COLUMNS[:2] + OPTIONS + RUN_COLUMNS[2:]


def pmp_defaults() -> dict:
    """PMP's keyword defaults, read from its signature so that this table cannot drift from the code."""
    return {k: p.default for k, p in inspect.signature(PMP.__init__).parameters.items() if k in OPTIONS}


def ablation_rows(rep, runs_dir: Path) -> list[dict]:
    """One row per run of a report over `runs_dir`: the option values come from the run's own
    config.yaml (what it was trained with), not from the sweep file."""
    defaults, rows = pmp_defaults(), []
    for r in rep.records:
        cfg = load_config(runs_dir / r.row["run"] / "config.yaml")
        used = {**defaults, **cfg.pruning.options, "scope": cfg.pruning.scope}
        rows.append({**{c: r.row.get(c) for c in RUN_COLUMNS}, "variant": r.name or "default",
                     **{k: used.get(k) for k in OPTIONS}})
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", help="run only the sweep of this name (ablation, ablation_sbu)")
    ap.add_argument("--sweeps", nargs="+", type=Path, default=SWEEPS, help="sweep files (default: both ablations)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of ablation.csv/.json")
    ap.add_argument("--reports", type=Path, default=ROOT / "docs" / "results", help="folder of the reports")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)

    meta_path = args.results / "ablation.json"
    timing = json.loads(meta_path.read_text())["timing"] if meta_path.is_file() else {}
    rows = []
    for path in args.sweeps:  # every sweep's finished runs are tabled; only the selected ones run
        spec = load_sweep(path)
        if not args.only or spec.name == args.only:
            t0 = time.perf_counter()
            result = run_sweep(spec, workers=args.workers, data_root=args.data_root)
            timing[spec.name] = {"sweep_wall_s": round(time.perf_counter() - t0, 1), "runs": len(result.runs),
                                 "failed": [o.run_id for o in result.failed]}
        if not spec.out.is_dir():
            continue
        rep = report(spec.out, out_dir=args.reports / spec.name)
        rows += ablation_rows(rep, spec.out)
        if spec.name in timing:
            timing[spec.name]["total_run_wall_s"] = round(sum(r.metrics["wall_s"] for r in rep.records), 1)
    write_csv(args.results / "ablation.csv", rows)
    meta = {"machine": machine(), "command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
            "timing": timing, "rows": len(rows)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
