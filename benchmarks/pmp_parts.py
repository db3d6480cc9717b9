"""Where PMP's extra step time goes, and what the two speed-ups of session 2 bought (FPHA-size agcn).

- band-stop forward + backward on the 1M-weight fc tensor: the compiled float32 pass against the
  torch expression (the fallback that other dtypes and devices run), thread CPU time, interleaved;
- page faults (minor) and system time per training step, dense and PMP, under glibc's default
  allocator and with `keep_freed_memory()` (each in a fresh process);
- PMP's own per-step work outside the network: the alignment term forward + backward, and the
  band-edge update (`_schedule`).

    python benchmarks/pmp_parts.py      # writes benchmarks/results/pmp_parts.json (~1 min)
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).parent))
from pmp_cost import Run  # noqa: E402

from pmp.pruning import bandstop  # noqa: E402

OUT = Path(__file__).parent / "results" / "pmp_parts.json"


def _median_ms(fn, repeats: int = 40) -> float:
    for _ in range(5):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    return round(statistics.median(ts) * 1e3, 3)


def band_stop_cost() -> dict:
    w = (torch.randn(384, 2688) * 0.02).requires_grad_()
    edge, sharp = torch.tensor(0.05), torch.tensor(100 / 0.02)
    grad = torch.randn(384, 2688)

    def step():
        w.grad = None
        bandstop._BandStopFn.apply(w, edge, sharp).backward(grad)

    def torch_step():
        with mock.patch.object(bandstop, "_compiled", lambda t: False):
            step()

    compiled, expression = [], []
    for _ in range(5):  # interleaved blocks
        compiled.append(_median_ms(step, 20))
        expression.append(_median_ms(torch_step, 20))
    return {"tensor": [384, 2688], "compiled_ms": statistics.median(compiled),
            "torch_expression_ms": statistics.median(expression)}


def faults(cfg: str, keep: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "faults", cfg, str(int(keep))], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _faults_here(cfg: str, keep: bool) -> dict:
    if keep:
        from pmp.training.allocator import keep_freed_memory

        keep_freed_memory()
    run = Run(cfg)
    run.i = 1500
    run.block(5)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    run.block(20)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / 20,
            "system_ms_per_step": round((r1.ru_stime - r0.ru_stime) / 20 * 1e3, 2)}


def pmp_own_work() -> dict:
    run = Run("wasserstein")
    pruner = run.pruner
    pruner.progress = 0.75
    return {"penalty_forward_backward_ms": _median_ms(lambda: pruner.penalty().backward()),
            "band_edge_update_ms": _median_ms(pruner._schedule)}


def main() -> None:
    from pmp.training.allocator import keep_freed_memory

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    allocator = {f"{cfg}_{'kept' if keep else 'default'}": faults(cfg, keep)
                 for cfg in ("dense", "wasserstein") for keep in (False, True)}
    keep_freed_memory()  # the rest as `pmp train` runs
    result = {
        "band_stop_fc": band_stop_cost(),
        "allocator": allocator,
        "pmp_own_work": pmp_own_work(),
        "setup": "agcn FPHA size, batch 64, 1 thread, r=0.98, medians of thread CPU time; timings with the "
                 "allocator as pmp train sets it",
    }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "faults":
        torch.set_num_threads(1)
        print(json.dumps(_faults_here(sys.argv[2], bool(int(sys.argv[3])))))
    else:
        main()
