"""Dense torch vs sparse `.pmp` inference on this CPU, for the default agcn at several pruning rates.

    .venv/bin/python benchmarks/inference.py [--rates 0.9,0.95,0.98,0.99] [--repeats 200] [--threads N] [--block 10]

Writes benchmarks/results/inference.json; the same as `pmp bench-inference` (same options). Weights
are random and pruned by magnitude: inference speed depends on the sparsity, not on what the
weights learned.
"""

from __future__ import annotations

import sys

from pmp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-inference", *sys.argv[1:]]))
