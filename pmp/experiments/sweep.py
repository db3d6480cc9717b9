"""Run every run of a sweep, locally in worker processes or on a Ray cluster, resumably.

A run is finished when its folder holds a parseable `metrics.json` (the runner writes it last,
atomically), so the file system is the only state: an interrupted or crashed sweep is resumed by
running it again, finished runs are skipped, and unfinished ones restart in their folder (the runner
resumes from its own checkpoints). A failing run leaves `error.txt` and never stops the sweep.

One sweep per folder at a time (a lock naming its holder); a finished run is skipped only if it was
made with the same config (its fingerprint), else the sweep refuses to start; local workers die
with the sweep's process, however it dies, so none keeps training into the folder unattended.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

from tqdm.auto import tqdm

from .grid import SweepSpec, RunSpec, expand_grid, load_sweep, select_runs

if TYPE_CHECKING:
    from pmp.training.config import ExperimentConfig

Runner = Callable[["ExperimentConfig", Path], dict]
METRICS = "metrics.json"
ERROR = "error.txt"
RUN_INFO = "run.json"
SUMMARY = "sweep.json"
DEFAULT_LOCAL_WORKERS = 2
LTH_DEFAULT_ROUNDS = 3  # pmp.pruning.lottery: LTH trains rounds + 1 times the configured epochs


def run_experiment(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """The default runner, imported when a worker first needs it so that the sweep starts fast."""
    from pmp.training import run_experiment as train

    return train(cfg, run_dir)


def read_metrics(run_dir: Path) -> dict | None:
    """The run's metrics if it finished, else None (missing, unreadable or failing its checksum)."""
    from pmp.training.rundir import finished_metrics

    return finished_metrics(run_dir)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the kernel kills this worker when the sweep's process dies (Linux's
    PR_SET_PDEATHSIG; elsewhere a thread that watches the parent), so that a sweep killed with
    SIGKILL leaves no orphan training into its folders."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler, a closing session) stops the sweep as Ctrl-C does, by raising
    KeyboardInterrupt, so that `finally` blocks run: sweep.json gets its last state and callers
    pack their archives, where SIGTERM's default action would end the process mid-way. A sweep
    started in the background (`cmd &`) ignores SIGINT, so SIGTERM is how one stops it. Only in the
    main thread, and only where SIGTERM has its default action (a host program's handler stays)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def estimated_cost(cfg: ExperimentConfig) -> int:
    """Total training epochs: long runs start first so that the workers finish together."""
    options = cfg.pruning.run_options()
    if cfg.pruning.method == "lth" and not options.get("split_epochs", False):
        return cfg.train.epochs * (int(options.get("rounds", LTH_DEFAULT_ROUNDS)) + 1)
    return cfg.train.epochs


def execute(runner: Runner, cfg: ExperimentConfig, run_dir: str, threads: int) -> dict:
    """One run inside a worker: never raises, so one bad run cannot take the sweep down."""
    start = time.perf_counter()
    path = Path(run_dir)
    try:
        if threads:  # every run, since a previous run in this worker may have set train.threads
            import torch

            torch.set_num_threads(threads)
        runner(cfg, path)
        if read_metrics(path) is None:
            raise RuntimeError(f"the runner returned without writing {path / METRICS}")
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on; Ctrl-C still stops it
        (path / ERROR).write_text(traceback.format_exc())
        return {"status": "failed", "wall_s": time.perf_counter() - start, "error": f"{type(e).__name__}: {e}"}
    return {"status": "done", "wall_s": time.perf_counter() - start, "error": None}


@dataclass
class RunOutcome:
    run_id: str
    status: str  # done (ran now) | skipped (finished earlier) | failed | pending (not reached)
    wall_s: float | None = None
    error: str | None = None  # "Type: message"; the traceback is in <run>/error.txt


@dataclass
class SweepResult:
    name: str
    out_dir: Path
    runs: list[RunOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return all(r.status in ("done", "skipped") for r in self.runs)

    def summary(self) -> str:
        """What the CLI prints: counts, where the details are, and one line per failed run."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in ("done", "skipped", "failed", "pending") if self.count(s))
        lines = [f"sweep {self.name}: {len(self.runs)} runs ({counts or 'none'}) -> {self.out_dir / SUMMARY}"]
        lines += [f"  FAILED {r.run_id}: {r.error} (see {self.out_dir / r.run_id / ERROR})" for r in self.failed]
        return "\n".join(lines)


@dataclass
class _Job:
    run: RunSpec
    cfg: ExperimentConfig
    run_dir: Path
    isolated: bool = False  # a retry, alone in a fresh worker, after its pool broke under it


class _Backend(Protocol):
    capacity: int

    def submit(self, job: _Job) -> Any: ...

    def wait(self, handles: Iterable[Any]) -> list[tuple[Any, dict | BaseException]]:
        """At least one finished handle, with its result or the error that lost it (e.g. a dead worker)."""

    def close(self, cancel: bool) -> None: ...


class _LocalBackend:
    """Worker processes, spawned (forking a process that holds torch threads is unsafe) and reused
    across runs: a fresh process per run would cost more than a short run (torch import).

    A worker that dies (killed by the OOM killer, a segfault) breaks the whole pool, and every run in
    flight on it is lost, not only the one that killed it. Which one did cannot be told, so each
    lost run is retried once, alone in a fresh single-worker pool (`_Job.isolated`): the culprit
    fails there without taking anything with it, the others finish."""

    def __init__(self, runner: Runner, workers: int):
        self.runner, self.capacity = runner, workers
        self.threads = 1 if workers > 1 else 0
        self.pool = self._new_pool(workers) if workers > 1 else None
        self.pool_of: dict[cf.Future, cf.ProcessPoolExecutor] = {}  # which pool runs each future

    @staticmethod
    def _new_pool(workers: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_die_with_parent, initargs=(os.getpid(),))

    def submit(self, job: _Job) -> cf.Future:
        args = (self.runner, job.cfg, str(job.run_dir), self.threads)
        if self.pool is None:  # serial: in-process, debuggable
            future: cf.Future = cf.Future()
            future.set_result(execute(*args))
            return future
        if job.isolated:
            pool = self._new_pool(1)
            future = pool.submit(execute, *args)
            pool.shutdown(wait=False)  # its worker exits once the run is done
        else:
            try:
                future = self.pool.submit(execute, *args)
            except BrokenProcessPool:  # broken since the last result came in: start afresh
                self._replace_pool()
                future = self.pool.submit(execute, *args)
            pool = self.pool
        self.pool_of[future] = pool
        return future

    def _replace_pool(self) -> None:
        self.pool.shutdown(wait=False)
        self.pool = self._new_pool(self.capacity)

    def wait(self, handles: Iterable[cf.Future]) -> list[tuple[cf.Future, dict | BaseException]]:
        done, _ = cf.wait(list(handles), return_when=cf.FIRST_COMPLETED)
        out = []
        for f in done:
            error = f.exception()
            # the executor may mark a broken pool only after the next submit went in: replace it as
            # soon as one of its runs reports it, so queued runs start on a fresh one
            if isinstance(error, BrokenProcessPool) and self.pool_of.get(f) is self.pool:
                self._replace_pool()
            self.pool_of.pop(f, None)
            out.append((f, error or f.result()))
        return out

    def close(self, cancel: bool) -> None:
        pools = {id(p): p for p in (self.pool, *self.pool_of.values()) if p is not None}
        for pool in pools.values():
            if cancel:  # interrupted: end the runs in flight now (they resume from their checkpoints),
                _terminate_workers(pool)  # else the interpreter's exit would wait for them to finish
            pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _terminate_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Python 3.14's public `terminate_workers`; before it, the pool's own process table (private,
    so looked up with a default: were it renamed, the exit would wait for the runs again, which
    tests/test_sweep_faults.py would catch). Before `shutdown`, which drops that table."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()


class SweepBackendError(ValueError):
    """The backend cannot start (no Ray cluster at the address, Ray not installed)."""


def start_local_ray(**kwargs: Any) -> Any:
    """A private Ray instance whose services all listen on 127.0.0.1 only.

    Ray binds its servers to the node's address, which it takes to be the machine's outward one
    unless clustering is off (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read when Ray is imported,
    and inherited by Ray's processes); `_node_ip_address` then pins the node to loopback."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the variable was set
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **kwargs)
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":
        ray.shutdown()
        raise SweepBackendError(f"the local Ray instance took the address {node_ip}, not 127.0.0.1; refusing to run")
    return ray


class _RayBackend:
    """Ray tasks of one CPU each; connects to `address` ("auto", "HOST:PORT", "ray://...") or, with
    "local" or None, starts a private Ray on loopback (`start_local_ray`)."""

    def __init__(self, runner: Runner, workers: int | None, address: str | None):
        try:
            import ray
        except ImportError as e:
            raise SweepBackendError("the Ray backend needs Ray: pip install 'pmp[ray]'") from e
        self.ray, self.runner = ray, runner
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray and address in (None, "local"):
            start_local_ray()
        elif self.owns_ray:
            try:
                ray.init(address=address, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SweepBackendError(f"--ray {address}: no Ray cluster reachable there ({e}); start one "
                                        "(`ray start --head`, docs/sweeps.md) or use --ray local") from None
        self.capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.remote = ray.remote(num_cpus=1)(execute)  # retried if a node dies: runs resume
        self.in_flight: set[Any] = set()

    def submit(self, job: _Job) -> Any:
        ref = self.remote.remote(self.runner, job.cfg, str(job.run_dir), 1)
        self.in_flight.add(ref)
        return ref

    def wait(self, handles: Iterable[Any]) -> list[tuple[Any, dict | BaseException]]:
        (ref,), _ = self.ray.wait(list(handles), num_returns=1)
        self.in_flight.discard(ref)
        try:
            return [(ref, self.ray.get(ref))]
        except Exception as e:  # noqa: BLE001 - the worker or its node died, or the task could not load
            return [(ref, e)]

    def close(self, cancel: bool) -> None:
        if cancel:  # interrupted: a Ray we do not own would otherwise keep training
            for ref in self.in_flight:
                self.ray.cancel(ref)
        if self.owns_ray:
            self.ray.shutdown()


def build_configs(spec: SweepSpec, runs: list[RunSpec], data_root: str | None = None) -> list[ExperimentConfig]:
    """Every run's full config, built before anything runs so that a bad override fails at once.

    `data_root` (machine-specific, so not in the sweep file) sets `data.root` of every run. Relative
    run folders a run reads (`train.init`, `train.teacher`) are made absolute against the current
    directory: a Ray worker runs in another one."""
    from pmp.training.config import ConfigError, ExperimentConfig, apply_overrides, load_config

    base = load_config(spec.base) if spec.base else ExperimentConfig()
    if data_root is not None:
        base = apply_overrides(base, {"data.root": data_root})
    configs = []
    for run in runs:
        try:
            cfg = apply_overrides(base, run.overrides)
        except ConfigError as e:
            raise ConfigError(f"sweep {spec.name}, run {run.run_id}: {e}") from e
        for key in ("init", "teacher"):
            path = getattr(cfg.train, key)
            if path and not Path(path).expanduser().is_absolute():
                setattr(cfg.train, key, os.path.abspath(path))
        configs.append(cfg)
    return configs


def write_sealed_json(path: Path, data: dict) -> None:
    """run.json: read back by the report, so checksummed (pmp.training.checkpoint)."""
    from pmp.training.checkpoint import write_sealed_json as write

    write(path, json.loads(json.dumps(data, default=str)))


def _write_json(path: Path, data: Any) -> None:
    from pmp.training.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _write_summary(spec: SweepSpec, out_dir: Path, outcomes: dict[str, RunOutcome], meta: dict) -> None:
    counts = {s: sum(o.status == s for o in outcomes.values()) for s in ("done", "skipped", "failed", "pending")}
    runs = [
        {**vars(o), "error_file": f"{o.run_id}/{ERROR}" if o.status == "failed" else None}
        for o in outcomes.values()
    ]
    _write_json(out_dir / SUMMARY, {"name": spec.name, "base": spec.base, **meta, "counts": counts, "runs": runs})


def run_sweep(
    spec: SweepSpec | str | Path,
    out_dir: str | Path | None = None,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    runner: Runner = run_experiment,
    progress: bool = True,
    data_root: str | None = None,
    fresh: bool = False,
    only: dict[str, list[Any]] | None = None,
) -> SweepResult:
    """Run every unfinished run of a sweep; returns per-run outcomes (also written to `sweep.json`).

    `workers`: local processes (default 2; 1 = serial, in this process) or, with Ray, the most
    tasks in flight (default: the cluster's CPUs). `runner` must be picklable (a module-level function).
    `data_root` sets `data.root` of every run. Finished runs of another config (the spec's overrides
    or base config changed) are an error unless `fresh`, which retrains them. `only` runs a subset
    of the grid in the same run folders (`grid.select_runs`), e.g. `{"seed": [0, 1, 2]}`.
    """
    from pmp.training.rundir import folder_lock

    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    spec = spec if isinstance(spec, SweepSpec) else load_sweep(spec)
    out = (Path(out_dir) if out_dir is not None else spec.out).resolve()  # Ray workers have another cwd
    runs = expand_grid(spec)
    if only:
        runs = select_runs(runs, only)
    configs = build_configs(spec, runs, data_root)
    with terminate_as_interrupt(), folder_lock(out, f"pmp sweep {spec.name}"):
        return _run_locked(spec, out, runs, configs, workers, backend, ray_address, runner, progress, fresh)


def _stale_runs(out: Path, runs: list[RunSpec], configs: list[ExperimentConfig]) -> list[str]:
    """Finished runs whose recorded config fingerprint is not the one the spec asks for now."""
    from pmp.training.rundir import fingerprint, recorded_fingerprint

    stale = []
    for run, cfg in zip(runs, configs):
        old = recorded_fingerprint(out / run.run_id, read_metrics(out / run.run_id))
        if old is not None and old != fingerprint(cfg):
            stale.append(run.run_id)
    return stale


def _run_locked(spec: SweepSpec, out: Path, runs: list[RunSpec], configs: list[ExperimentConfig],
                workers: int | None, backend: str, ray_address: str | None, runner: Runner, progress: bool,
                fresh: bool) -> SweepResult:
    from pmp.training.rundir import RunFolderError, discard

    stale = _stale_runs(out, runs, configs)
    if stale and not fresh:
        raise RunFolderError(f"{out}: {len(stale)} finished run(s) were made with another config ({', '.join(stale[:5])}"
                             f"{', ...' if len(stale) > 5 else ''}): sweep into another --out, or pass --fresh to "
                             "retrain them")
    for run_id in stale:
        discard(out / run_id)
    outcomes = {r.run_id: RunOutcome(r.run_id, "pending") for r in runs}
    jobs = []
    for run, cfg in zip(runs, configs):
        run_dir = out / run.run_id
        if read_metrics(run_dir) is not None:
            outcomes[run.run_id].status = "skipped"
            continue
        run_dir.mkdir(exist_ok=True)
        for name in (METRICS, ERROR):  # an unreadable metrics.json or an old failure
            (run_dir / name).unlink(missing_ok=True)
        write_sealed_json(run_dir / RUN_INFO, {"run_id": run.run_id, "axes": run.axes, "overrides": run.overrides})
        jobs.append(_Job(run, cfg, run_dir))
    jobs.sort(key=lambda j: -estimated_cost(j.cfg))  # stable: grid order among equals

    meta = {
        "backend": backend,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    bar = tqdm(total=len(runs), initial=len(runs) - len(jobs), desc=spec.name, unit="run", disable=not progress)
    engine: _Backend | None = None
    cancel = True
    try:
        if jobs:
            engine = (
                _RayBackend(runner, workers, ray_address)
                if backend == "ray"
                else _LocalBackend(runner, workers or DEFAULT_LOCAL_WORKERS)
            )
            meta["workers"] = engine.capacity
            _drive(engine, jobs, outcomes, bar, lambda: _write_summary(spec, out, outcomes, meta))
        cancel = False
    finally:
        if engine is not None:
            engine.close(cancel)
        bar.close()
        meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_summary(spec, out, outcomes, meta)
    return SweepResult(spec.name, out, list(outcomes.values()))


def _drive(
    engine: _Backend, jobs: list[_Job], outcomes: dict[str, RunOutcome], bar: tqdm, checkpoint: Callable[[], None]
) -> None:
    """Keep `engine.capacity` runs in flight, most expensive first; record each result as it lands."""
    queue = list(reversed(jobs))
    in_flight: dict[Any, _Job] = {}
    failed = 0
    while queue or in_flight:
        while queue and len(in_flight) < engine.capacity:
            job = queue.pop()
            in_flight[engine.submit(job)] = job
        bar.set_postfix(running=len(in_flight), failed=failed)
        for handle, result in engine.wait(in_flight):
            job = in_flight.pop(handle)
            if isinstance(result, BrokenProcessPool) and not job.isolated:  # lost with its pool: retry alone
                queue.append(replace(job, isolated=True))
                continue
            if isinstance(result, BaseException):  # failed outside `execute` (dead worker...): no error.txt yet
                (job.run_dir / ERROR).write_text("".join(traceback.format_exception(result)))
                last = (str(result).strip().splitlines() or [type(result).__name__])[-1]
                result = {"status": "failed", "wall_s": None, "error": f"outside the runner: {last}"}
            outcome = outcomes[job.run.run_id]
            outcome.status, outcome.wall_s, outcome.error = result["status"], result["wall_s"], result["error"]
            if outcome.status == "failed":
                failed += 1
                if not bar.disable:
                    bar.write(f"FAILED {job.run.run_id}: {outcome.error} (see {job.run_dir / ERROR})")
            bar.set_postfix(running=len(in_flight), failed=failed, refresh=False)
            bar.update()
            checkpoint()
