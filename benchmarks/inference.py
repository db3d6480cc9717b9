"""Dense torch vs sparse `.pmp` inference on this CPU, for the default agcn at several pruning rates.

    .venv/bin/python benchmarks/inference.py [--rates 0.9,0.95,0.98,0.99] [--repeats 200] [--threads N]

Writes benchmarks/results/inference.json (same as `pmp bench-inference`). Weights are random and
pruned by magnitude: inference speed depends on the sparsity, not on what the weights learned.
"""

from __future__ import annotations

import argparse

from pmp.export.bench import run_benchmark, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="0.9,0.95,0.98,0.99")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, help="torch and numba threads (default: the machine's default)")
    p.add_argument("--out", default="benchmarks/results/inference.json")
    args = p.parse_args()
    result = run_benchmark([float(r) for r in args.rates.split(",")], args.out, repeats=args.repeats,
                           threads=args.threads)
    print(summary(result, args.out))


if __name__ == "__main__":
    main()
