"""PMP training-step cost against dense on the attention GCN (FPHA size, batch 64, one thread).

Time: dense and PMP alternate block by block in one process (thread CPU time, so other load on the
machine matters less); the ratio is the median over blocks. The process's allocator is set up as
`pmp train` sets it (pmp/training/allocator.py); the ratio under glibc's default allocator, in a
second process, is reported beside it. Memory: each configuration in a fresh
subprocess with MALLOC_MMAP_THRESHOLD_=65536 (freed memory leaves the RSS): tensors alive between
steps (parameters, buffers, gradients, optimizer state, PMP scratch) plus the RSS growth during 10
steps.

    python benchmarks/pmp_cost.py            # prints the ratios (benchmarks/paper_table.py stores them)
    python benchmarks/pmp_cost.py --write    # and stores them in benchmarks/results/pmp.json
    python benchmarks/pmp_cost.py time dense wasserstein kl wasserstein-global wasserstein-prior
    python benchmarks/pmp_cost.py time-default-malloc wasserstein
    python benchmarks/pmp_cost.py mem wasserstein
CONFIG: dense | wasserstein | kl, optionally suffixed -global (scope) and/or -prior (edge rule).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pmp.models import create_model
from pmp.pruning import PMP
from pmp.training.allocator import keep_freed_memory


class Run:
    def __init__(self, cfg: str):
        torch.manual_seed(0)
        self.cfg = cfg
        self.model = create_model("agcn", num_nodes=21, in_frames=32, in_channels=3, num_classes=45)
        self.pruner = None
        if cfg != "dense":
            align, *rest = cfg.split("-")
            self.pruner = PMP(self.model, rate=0.98, alignment=align, scope="global" if "global" in rest else "layer",
                              edge="prior" if "prior" in rest else "empirical")
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(64, 32, 21, 3, generator=g)
        self.y = torch.randint(0, 45, (64,), generator=g)
        self.i = 0

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        if self.pruner is not None:
            loss = loss + self.pruner.penalty()
        loss.backward()
        self.opt.step()
        if self.pruner is not None:
            self.pruner.step(min(self.i / 2000, 1.0))
        self.i += 1

    def block(self, n: int) -> float:
        t0 = time.thread_time()
        for _ in range(n):
            self.step()
        return (time.thread_time() - t0) / n * 1e3


def time_configs(configs: list[str], blocks: int = 24) -> dict[str, dict[str, float]]:
    runs = [Run("dense")] + [Run(c) for c in configs]
    for r in runs:
        r.block(5)
    times: dict[str, list[float]] = {r.cfg: [] for r in runs}
    for _ in range(blocks):
        for r in runs:
            times[r.cfg].append(r.block(10))
    out = {}
    for r in runs:
        ratios = [t / d for t, d in zip(times[r.cfg], times["dense"])]
        out[r.cfg] = {"ms_step_median": round(statistics.median(times[r.cfg]), 2),
                      "ratio_median_of_blocks": round(statistics.median(ratios), 3)}
    return out


def _proc_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_of(cfg: str) -> dict[str, float]:
    run = Run(cfg)
    run.block(3)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the VmHWM peak
    rss0 = _proc_kb("VmRSS:")
    run.block(10)
    transient = (_proc_kb("VmHWM:") - rss0) * 1024
    ts = list(run.model.parameters()) + list(run.model.buffers())
    ts += [p.grad for p in run.model.parameters() if p.grad is not None]
    ts += [v for st in run.opt.state.values() for v in st.values() if torch.is_tensor(v)]
    state = sum(t.numel() * t.element_size() for t in ts)
    if run.pruner is not None:
        state += sum(g.scratch.nbytes for g in run.pruner._groups if g.scratch is not None)
    return {"state_MB": state / 2**20, "transient_peak_MB": transient / 2**20,
            "peak_tensor_MB": (state + transient) / 2**20, "process_peak_rss_MB": _proc_kb("VmHWM:") / 1024}


def _memory_subprocess(cfg: str) -> dict[str, float]:
    return _subprocess_json("mem", cfg, env={"MALLOC_MMAP_THRESHOLD_": "65536"})


def _subprocess_json(*args: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env={**os.environ, **(env or {})}, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_step_cost(config: str = "wasserstein") -> dict:
    """Step-time and peak-memory ratios of PMP (default options) against dense, each timing in a
    fresh process: as `pmp train` runs (allocator kept), and under glibc's default allocator."""
    t = _subprocess_json("time", config)
    t_default = _subprocess_json("time-default-malloc", config)
    dense_mem, pmp_mem = _memory_subprocess("dense"), _memory_subprocess(config)
    return {
        "step_time_ratio": t[config]["ratio_median_of_blocks"],
        "step_time_ratio_default_malloc": t_default[config]["ratio_median_of_blocks"],
        "peak_memory_ratio": round(pmp_mem["peak_tensor_MB"] / dense_mem["peak_tensor_MB"], 3),
        "cost_detail": {"time_ms": t, "time_ms_default_malloc": t_default, "memory_dense": dense_mem,
                        "memory_pmp": pmp_mem,
                        "setup": "agcn FPHA size (1.10M weights), batch 64, 1 thread, r=0.98, thread CPU time, "
                                 "24 interleaved blocks of 10 steps"},
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) > 1 and sys.argv[1] in ("time", "time-default-malloc"):
        if sys.argv[1] == "time":
            keep_freed_memory()
        print(json.dumps(time_configs(sys.argv[2:])))
    elif len(sys.argv) > 1 and sys.argv[1] == "mem":
        print(json.dumps(memory_of(sys.argv[2])))
    else:
        t0 = time.perf_counter()
        cost = measure_step_cost()
        print(json.dumps(cost, indent=2))
        if "--write" in sys.argv[1:]:  # only the cost keys: the accuracy entries come from paper_table.py
            path = Path(__file__).parent / "results" / "pmp.json"
            doc = json.loads(path.read_text()) if path.is_file() else {}
            doc.update(cost)
            doc.setdefault("meta", {})["cost"] = {"command": "python benchmarks/pmp_cost.py --write",
                                                  "wall_s": round(time.perf_counter() - t0, 1),
                                                  "load_avg_end": list(os.getloadavg())}
            path.write_text(json.dumps(doc, indent=2))
