"""Fault scenarios end to end on the synthetic dataset (issue 14), counted in benchmarks/results/faults.json.

Every scenario ends in one of: `ok` (the result equals the uninterrupted run's, byte for byte where
the project writes bytes), `clear_error` (a one-line error of pmp's own kinds naming the file or
folder, nothing reported as a result), `silent` (a different result accepted without a word: must be
0), `unclear` (a traceback of another kind) or `lost` (a finished result gone, or a run that cannot be
completed by running the same command again: must be 0). Scenarios:

* kill -9 at a random moment of a training process, then the same command again;
* kill -9 inside a checkpoint or final-file write (at a random rename, or halfway through a file's
  bytes), then the same command again;
* kill -9 of a sweep's main process: its workers must die too; then the same sweep again;
* two sweeps started at once on one folder;
* byte flips at random positions and truncations of every file kind the project writes, each read
  by the command that reads it (eval, export, predict, train's resume/reuse, sweep, report).

    python benchmarks/faults.py [--seed 0] [--flips 12]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pmp.machine import process_alive  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "faults.json"
TINY = {
    "data": {"name": "synthetic", "options": {"seed": 0, "num_sequences": 90}},
    "preprocess": {"frames": 8},
    "model": {"name": "agcn", "kwargs": {"heads": 2, "attn_dim": 4, "gc_dim": 4, "hidden": 16}},
    "train": {"epochs": 4, "batch_size": 32, "checkpoint_every": 1, "eval_every": 2, "threads": 1},
    "pruning": {"method": "pmp", "rate": 0.9},
}
SWEEP = {"name": "faults", "grid": {"method": ["mp", "pmp"], "rate": [0.9], "seed": [0]}}
FINAL = ("model.safetensors", "masks.safetensors", "model.json", "metrics.json")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child(argv: list[str]) -> None:
    """`faults.py --child train CFG RUN_DIR [replace N | write N]`: train, dying by SIGKILL at the
    N-th file rename, or halfway through the N-th atomic file write."""
    from pmp.training import checkpoint, load_config, run_experiment

    cfg, run_dir = load_config(argv[1]), Path(argv[2])
    if len(argv) > 3:
        how, n = argv[3], int(argv[4])
        calls = {"n": 0}
        if how == "replace":
            real = os.replace

            def dying_replace(src, dst):  # noqa: ANN001
                calls["n"] += 1
                if calls["n"] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                real(src, dst)

            os.replace = dying_replace
        else:
            real_write = checkpoint.atomic_write_bytes

            def dying_write(path: Path, data: bytes) -> None:
                calls["n"] += 1
                if calls["n"] == n:
                    checkpoint.tmp_name(path).write_bytes(data[: len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
                real_write(path, data)

            checkpoint.atomic_write_bytes = dying_write
    run_experiment(cfg, run_dir)


def py(*args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, **kw)


def train_child(cfg: Path, run_dir: Path, *fault: str) -> subprocess.CompletedProcess:
    return py(str(Path(__file__).resolve()), "--child", "train", str(cfg), str(run_dir), *fault)


def sweep_cmd(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pmp.cli", "sweep", str(spec), "--out", str(out), "--workers", "2"]


def children(pid: int) -> set[int]:
    out = set()
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d))
        except OSError:
            pass
    return out


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, outcome: str, note: str = "") -> None:
        self.counts[outcome] += 1
        self.by_kind.setdefault(kind, Counter())[outcome] += 1
        if outcome in ("silent", "lost", "unclear") or (outcome == "clear_error" and kind not in self.examples):
            self.examples.setdefault(kind, []).append(f"{outcome}: {note}"[:300])
        print(f"  {kind}: {outcome} {note[:120]}", flush=True)


# ---------------------------------------------------------------- process kills


def kill_scenarios(tmp: Path, cfg: Path, ref_hash: str, ref_wall: float, rng: random.Random, tally: Tally,
                   trials: int) -> None:
    for i in range(trials):  # kill -9 at a random moment of the process's life
        run = tmp / f"kill{i}"
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", "train", str(cfg), str(run)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.2, ref_wall)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _finish_and_compare(cfg, run, ref_hash, tally, "kill -9 during training", f"after {delay:.1f}s")
    for i in range(trials):  # kill -9 inside a file write or between two renames
        how = rng.choice(["replace", "write"])
        n = rng.randint(1, 3 * TINY["train"]["epochs"] + 4)
        run = tmp / f"ckpt{i}"
        r = train_child(cfg, run, how, str(n))
        died = r.returncode == -signal.SIGKILL
        _finish_and_compare(cfg, run, ref_hash, tally, "kill -9 during a checkpoint/file write",
                            f"at {how} #{n}{'' if died else ' (not reached: ran to the end)'}")


def _finish_and_compare(cfg: Path, run: Path, ref_hash: str, tally: Tally, kind: str, note: str) -> None:
    r = train_child(cfg, run)
    if r.returncode != 0 or not (run / "metrics.json").is_file():
        tally.add(kind, "lost", f"{note}: rerun failed: {r.stderr.strip().splitlines()[-1:]}")
    else:
        tally.add(kind, "ok" if sha(run / "model.safetensors") == ref_hash else "silent", note)


def sweep_scenarios(tmp: Path, spec: Path, ref: dict[str, str], rng: random.Random, tally: Tally) -> None:
    out = tmp / "sweep_kill"
    proc = subprocess.Popen(sweep_cmd(spec, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(children(proc.pid)) < 2 and time.monotonic() < deadline:  # its workers (and spawn's tracker)
        time.sleep(0.2)
    time.sleep(rng.uniform(1.0, 8.0))
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed, deadline = time.monotonic(), time.monotonic() + 300  # a worker still importing torch checks
    while any(process_alive(w) for w in workers) and time.monotonic() < deadline:  # its parent only then
        time.sleep(0.2)
    orphans = [w for w in workers if process_alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    tally.add("kill -9 of a sweep: workers die with it", "lost" if orphans else "ok",
              f"{len(workers)} children, all gone {time.monotonic() - killed:.1f}s later; orphans {orphans}")
    _sweep_and_compare(spec, out, ref, tally, "kill -9 of a sweep, then the same sweep again")

    out = tmp / "sweep_twice"  # two at once
    procs = [subprocess.Popen(sweep_cmd(spec, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate() + (p.returncode,) for p in procs]
    refused = [err for _, err, rc in results if rc != 0]
    if len(refused) == 1 and "in use by" in refused[0] and "Traceback" not in refused[0]:
        tally.add("two sweeps at once on one folder", "clear_error", refused[0].strip().splitlines()[-1])
    elif not refused:  # the second found every run finished by the first: nothing trained twice
        tally.add("two sweeps at once on one folder", "ok", "the second one skipped every run")
    else:
        tally.add("two sweeps at once on one folder", "unclear", " | ".join(refused)[-300:])
    _compare_runs(out, ref, tally, "two sweeps at once: results")


def _sweep_and_compare(spec: Path, out: Path, ref: dict[str, str], tally: Tally, kind: str) -> None:
    r = subprocess.run(sweep_cmd(spec, out), cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        tally.add(kind, "lost", r.stderr.strip()[-300:])
        return
    _compare_runs(out, ref, tally, kind)


def _compare_runs(out: Path, ref: dict[str, str], tally: Tally, kind: str) -> None:
    got = {run: sha(out / run / "model.safetensors") for run in ref if (out / run / "model.safetensors").is_file()}
    if set(got) != set(ref):
        tally.add(kind, "lost", f"missing {sorted(set(ref) - set(got))}")
    else:
        tally.add(kind, "ok" if got == ref else "silent", f"{len(got)} runs")


# ---------------------------------------------------------------- corrupt files


def _flip(path: Path, rng: random.Random) -> str:
    raw = bytearray(path.read_bytes())
    i = rng.randrange(len(raw))
    raw[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))
    return f"bit flip at byte {i} of {len(raw)}"


def _truncate(path: Path, rng: random.Random) -> str:
    raw = path.read_bytes()
    n = rng.choice([0, len(raw) // 2, len(raw) - 1])
    path.write_bytes(raw[:n])
    return f"truncated to {n} of {len(raw)} bytes"


def corruption_scenarios(tmp: Path, cfg_path: Path, spec: Path, run: Path, sweep_out: Path, rng: random.Random,
                         tally: Tally, flips: int) -> None:
    import torch

    from pmp.data.base import DataFormatError
    from pmp.experiments.sweep import SweepBackendError
    from pmp.export import ExportFormatError, export_run, load_sparse, predict, read_compact
    from pmp.training import load_config, run_experiment
    from pmp.training.checkpoint import IntegrityError
    from pmp.training.config import ConfigError
    from pmp.training.rundir import RunFolderError
    from pmp.training.trainer import evaluate_run, load_run_metrics

    clear = (IntegrityError, ExportFormatError, RunFolderError, ConfigError, DataFormatError, SweepBackendError,
             FileNotFoundError)
    cfg = load_config(cfg_path)
    x = torch.randn(5, 8, 21, 3)

    def exported(folder: Path) -> dict[str, Any]:
        path = folder.parent / f"{folder.name}.pmp"
        export_run(folder, path, compress=False)
        return {"logits": predict(load_sparse(path), x).tolist(), "spec": read_compact(path).spec}

    def run_outputs(folder: Path) -> dict[str, Any]:
        """What a user gets from a run folder: eval, its metrics, its export; resume/reuse by train."""
        return {"eval": evaluate_run(folder), "metrics": load_run_metrics(folder), "export": exported(folder),
                "train": run_experiment(cfg, folder)}

    def resume_outputs(folder: Path) -> dict[str, Any]:
        """A run killed after its last checkpoint: the final files are redone from the checkpoint."""
        for name in FINAL:
            (folder / name).unlink(missing_ok=True)
        metrics = run_experiment(cfg, folder)
        return {"weights": sha(folder / "model.safetensors"), "acc": metrics["class_avg_acc"]}

    def pmp_outputs(path: Path) -> dict[str, Any]:
        return {"logits": predict(load_sparse(path), x).tolist(), "spec": read_compact(path).spec}

    def sweep_outputs(folder: Path) -> dict[str, Any]:
        """The same sweep again (it reads every run's metrics.json), then what its report reads (run.json too)."""
        from pmp.experiments import run_sweep
        from pmp.experiments.report import collect

        run_sweep(spec, folder, workers=1, progress=False)
        records, unreadable = collect(folder)  # what `pmp report` tabulates and plots
        rows = [{k: v for k, v in r.row.items() if k != "wall_s"} for r in records]  # a redone run's time
        return {"rows": sorted(json.dumps(r, sort_keys=True, default=str) for r in rows),
                "weights": {p.parent.name: sha(p) for p in sorted(folder.glob("*/model.safetensors"))},
                "unreadable": [str(p) for p in unreadable]}

    # the compressed and the raw export of the run
    pmp_z, pmp_raw = tmp / "model.pmp", tmp / "raw.pmp"
    export_run(run, pmp_z)
    export_run(run, pmp_raw, compress=False)
    ckpt_tensors = next((run / "checkpoints").glob("ckpt-*.safetensors")).name
    targets: list[tuple[str, Path, str, Callable[[Path], Any]]] = [
        ("config.yaml", run, "config.yaml", run_outputs),
        ("metrics.json", run, "metrics.json", run_outputs),
        ("model.json", run, "model.json", run_outputs),
        ("model.safetensors", run, "model.safetensors", run_outputs),
        ("masks.safetensors", run, "masks.safetensors", run_outputs),
        ("log.csv", run, "log.csv", run_outputs),
        ("checkpoints/last.json", run, "checkpoints/last.json", resume_outputs),
        ("checkpoint tensors", run, f"checkpoints/{ckpt_tensors}", resume_outputs),
        (".pmp (compressed)", pmp_z, "", pmp_outputs),
        (".pmp (raw)", pmp_raw, "", pmp_outputs),
        ("sweep run.json", sweep_out, "pmp_r0.9_s0/run.json", sweep_outputs),
        ("sweep metrics.json", sweep_out, "pmp_r0.9_s0/metrics.json", sweep_outputs),
        ("sweep.json", sweep_out, "sweep.json", sweep_outputs),
    ]
    for kind, src, rel, consume in targets:
        work = tmp / "c" / "ref"
        _fresh_copy(src, work)
        reference = consume(work)
        for trial in range(flips + 2):
            work = tmp / "c" / f"t{trial}"
            _fresh_copy(src, work)
            target = work / rel if rel else work
            note = (_flip if trial < flips else _truncate)(target, rng)
            try:
                got = consume(work)
            except clear as e:
                named = str(work) in str(e) or Path(rel or work.name).name in str(e)
                tally.add(kind, "clear_error" if named else "unclear", f"{note}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - counted: any other error is a traceback for the user
                tally.add(kind, "unclear", f"{note}: {type(e).__name__}: {e}")
                continue
            same = json.dumps(got, sort_keys=True, default=str) == json.dumps(reference, sort_keys=True, default=str)
            flagged = [u for u in got.get("unreadable", []) if u.endswith(rel)] if rel else []
            if flagged:  # the report lists the file as unreadable and leaves its run out
                tally.add(kind, "clear_error", f"{note}: reported unreadable: {flagged[0]}")
            elif same:
                tally.add(kind, "ok", f"{note}: same result")
            else:
                tally.add(kind, "silent", f"{note}: result differs")


def _fresh_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flips", type=int, default=12, help="bit flips per file kind (plus 2 truncations)")
    ap.add_argument("--trials", type=int, default=3, help="kill -9 trials per kind")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--child", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    import yaml

    from pmp.experiments import run_sweep
    from pmp.machine import machine_fingerprint

    start, rng, tally = time.perf_counter(), random.Random(args.seed), Tally()
    with tempfile.TemporaryDirectory(prefix="pmp-faults-") as t:
        tmp = Path(t)
        cfg = tmp / "tiny.yaml"
        cfg.write_text(yaml.safe_dump(TINY))
        spec = tmp / "sweep.yaml"
        spec.write_text(yaml.safe_dump({**SWEEP, "base": str(cfg)}))
        t0 = time.perf_counter()
        r = train_child(cfg, tmp / "ref")
        ref_wall = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr
        ref_hash = sha(tmp / "ref" / "model.safetensors")
        print(f"reference run: {ref_wall:.1f}s", flush=True)
        run_sweep(spec, tmp / "ref_sweep", workers=1, progress=False)
        ref_sweep = {p.parent.name: sha(p) for p in (tmp / "ref_sweep").glob("*/model.safetensors")}
        print("kill -9 scenarios", flush=True)
        kill_scenarios(tmp, cfg, ref_hash, ref_wall, rng, tally, args.trials)
        print("sweep scenarios", flush=True)
        sweep_scenarios(tmp, spec, ref_sweep, rng, tally)
        print("corrupt files", flush=True)
        corruption_scenarios(tmp, cfg, spec, tmp / "ref", tmp / "ref_sweep", rng, tally, args.flips)
    c = tally.counts
    result = {
        "scenarios": sum(c.values()), "lost": c["lost"], "silent": c["silent"], "clear_errors": c["clear_error"],
        "ok": c["ok"], "unclear": c["unclear"],
        "by_kind": {k: dict(v) for k, v in tally.by_kind.items()}, "examples": tally.examples,
        "command": f"python benchmarks/faults.py --seed {args.seed} --flips {args.flips} --trials {args.trials}",
        "machine": machine_fingerprint(), "wall_s": round(time.perf_counter() - start, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['scenarios']} scenarios: {c['ok']} ok, {c['clear_error']} clear errors, {c['silent']} silent, "
          f"{c['lost']} lost, {c['unclear']} unclear -> {args.out} ({result['wall_s']}s)")


if __name__ == "__main__":
    main()
