"""The reproducible mode's cost and effect: the same short synthetic run in torch's default CPU mode
and with `--reproducible` (AVX2 kernels pinned), alternating, each in a fresh process.

Writes benchmarks/results/reproducible.json: per run the training wall time (metrics.json's
wall_s: training only, not start-up), accuracy, the CPU capability torch used and the SHA-256 of
the trained weights; the median slowdown of the mode; whether runs within a mode, and across
modes, gave identical weights. On an AVX2-only CPU both modes run the same kernels.

    python benchmarks/reproducible.py [--epochs 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pmp.machine import machine_fingerprint  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "reproducible.json"


def one_run(run_dir: Path, config: str, epochs: int, reproducible: bool) -> dict:
    cmd = [sys.executable, "-m", "pmp.cli", *(["--reproducible"] if reproducible else []), "train",
           str(REPO / config), "--epochs", str(epochs), "--train.threads", "1",
           "--run-dir", str(run_dir), "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("PMP_REPRODUCIBLE", "ATEN_CPU_CAPABILITY")}
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"mode": "reproducible" if reproducible else "default", "wall_s": m["wall_s"],
            "class_avg_acc": m["class_avg_acc"], "cpu_capability": m["machine"]["torch_cpu_capability"],
            "weights_sha256": hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/synthetic.yaml",
                    help="the run to time (a dataset config needs PMP_DATA_ROOT)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    start, load_before = time.perf_counter(), os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for reproducible in (False, True):  # alternating: drifting machine load hits both modes alike
                runs.append(one_run(Path(tmp) / f"{i}_{int(reproducible)}", args.config, args.epochs, reproducible))
                print(json.dumps(runs[-1]), flush=True)
    by_mode = {mode: [r for r in runs if r["mode"] == mode] for mode in ("default", "reproducible")}
    median = {mode: statistics.median(r["wall_s"] for r in rs) for mode, rs in by_mode.items()}
    result = {
        "command": f"python benchmarks/reproducible.py --config {args.config} --epochs {args.epochs} "
                   f"--repeats {args.repeats}" + (f" --out {args.out}" if Path(args.out) != OUT else ""),
        "what": f"pmp train {args.config}, one torch thread, default mode vs --reproducible",
        "epochs": args.epochs, "runs": runs, "median_wall_s": median,
        "slowdown": round(median["reproducible"] / median["default"], 3),
        "same_weights_within_mode": {m: len({r["weights_sha256"] for r in rs}) == 1 for m, rs in by_mode.items()},
        "same_weights_across_modes": len({r["weights_sha256"] for r in runs}) == 1,
        "machine": machine_fingerprint(), "load_average_before_after": [load_before, os.getloadavg()],
        "wall_s": round(time.perf_counter() - start, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"slowdown of --reproducible: {result['slowdown']}x (median {median}); -> {args.out}")


if __name__ == "__main__":
    main()
