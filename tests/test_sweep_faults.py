"""Sweeps under faults (issue 14): one sweep per folder, workers that die with the sweep, no reuse of
runs made with another config, temporary names no two writers share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pmp.experiments import parse_sweep, run_sweep
from pmp.machine import process_alive as _alive
from pmp.training.checkpoint import atomic_write_json, read_sealed_json, write_sealed_json
from pmp.training.rundir import RunFolderError, fingerprint, folder_lock

TESTS = Path(__file__).resolve().parent


def fingerprinting_runner(cfg, run_dir: Path) -> dict:
    """A stand-in for training that records its pid, sleeps if asked, and writes sealed metrics
    with the config's fingerprint, like the real runner."""
    (run_dir / "pid").write_text(str(os.getpid()))
    time.sleep(cfg.pruning.options.get("sleep", 0.0))
    metrics = {"dataset": cfg.data.name, "method": cfg.pruning.method, "rate": cfg.pruning.rate,
               "seed": cfg.train.seed, "split": cfg.data.split, "class_avg_acc": 0.5, "fingerprint": fingerprint(cfg)}
    write_sealed_json(run_dir / "metrics.json", metrics)
    return metrics


def _spec(**overrides):
    return parse_sweep({"name": "f", "grid": {"method": ["mp", "pmp"], "rate": [0.9], "seed": [0]},
                        "overrides": {"train.epochs": 3, **overrides}})


def test_a_second_sweep_on_a_locked_folder_fails_naming_the_holder(tmp_path):
    with folder_lock(tmp_path, "pmp sweep other"):
        with pytest.raises(RunFolderError, match=f"pmp sweep other \\(pid {os.getpid()} on "):
            run_sweep(_spec(), tmp_path, workers=1, runner=fingerprinting_runner, progress=False)
    assert not (tmp_path / "mp_r0.9_s0").exists()  # nothing touched
    assert run_sweep(_spec(), tmp_path, workers=1, runner=fingerprinting_runner, progress=False).count("done") == 2


def test_a_changed_spec_does_not_reuse_finished_runs(tmp_path):
    run_sweep(_spec(), tmp_path, workers=1, runner=fingerprinting_runner, progress=False)
    before = (tmp_path / "mp_r0.9_s0" / "metrics.json").read_bytes()
    with pytest.raises(RunFolderError, match="another config.*mp_r0.9_s0.*--fresh"):
        run_sweep(_spec(**{"train.epochs": 4}), tmp_path, workers=1, runner=fingerprinting_runner, progress=False)
    assert (tmp_path / "mp_r0.9_s0" / "metrics.json").read_bytes() == before
    again = run_sweep(_spec(**{"train.epochs": 4}), tmp_path, workers=1, runner=fingerprinting_runner,
                      progress=False, fresh=True)
    assert again.count("done") == 2
    assert run_sweep(_spec(**{"train.epochs": 4}), tmp_path, workers=1, runner=fingerprinting_runner,
                     progress=False).count("skipped") == 2


def test_a_corrupt_metrics_file_is_redone_not_reported(tmp_path):
    run_sweep(_spec(), tmp_path, workers=1, runner=fingerprinting_runner, progress=False)
    path = tmp_path / "pmp_r0.9_s0" / "metrics.json"
    path.write_text(path.read_text().replace('"class_avg_acc": 0.5', '"class_avg_acc": 0.9'))
    result = run_sweep(_spec(), tmp_path, workers=1, runner=fingerprinting_runner, progress=False)
    assert (result.count("done"), result.count("skipped")) == (1, 1)
    assert read_sealed_json(path)["class_avg_acc"] == 0.5


def test_concurrent_writers_of_one_file_never_share_a_temporary(tmp_path):
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(200):
                atomic_write_json(tmp_path / "sweep.json", {"writer": i})
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads((tmp_path / "sweep.json").read_text())["writer"] in range(4)
    assert not list(tmp_path.glob("*.tmp"))


RUNS = ("mp_r0.9_s0", "pmp_r0.9_s0")


def _start_sleeping_sweep(out: Path, prelude: str = "", wrap: bool = False) -> tuple[subprocess.Popen, list[int]]:
    """A 2-worker sweep of two 120 s runs in a subprocess, once both workers are training: the
    process and the workers' pids. `wrap`: a KeyboardInterrupt is recorded in out/caught, exit 130."""
    call = f"run_sweep(spec, {str(out)!r}, workers=2, runner=fingerprinting_runner, progress=False)"
    if wrap:
        call = (f"try:\n    {call}\nexcept KeyboardInterrupt as e:\n"
                f"    open({str(out / 'caught')!r}, 'w').write(str(e))\n    raise SystemExit(130)")
    script = (
        prelude + "from pmp.experiments import parse_sweep, run_sweep\n"
        "from test_sweep_faults import fingerprinting_runner\n"
        "spec = parse_sweep({'name': 'k', 'grid': {'method': ['mp', 'pmp'], 'rate': [0.9], 'seed': [0]},"
        " 'overrides': {'pruning.options.sleep': 120}})\n" + call + "\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    sweep = subprocess.Popen([sys.executable, "-c", script], env=env)
    pid_files = [out / r / "pid" for r in RUNS]
    deadline = time.monotonic() + 120
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert time.monotonic() < deadline and sweep.poll() is None, "the workers never started"
        time.sleep(0.2)
    return sweep, [int(p.read_text()) for p in pid_files]


def _assert_die(workers: list[int]) -> None:
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers):
        assert time.monotonic() < deadline, f"orphaned workers {workers} still running"
        time.sleep(0.2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 and /proc: Linux")
def test_workers_die_with_a_killed_sweep(tmp_path):
    sweep, workers = _start_sleeping_sweep(tmp_path)
    assert all(_alive(w) for w in workers)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    _assert_die(workers)
    assert not any((tmp_path / r / "metrics.json").exists() for r in RUNS)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc: Linux")
def test_sigterm_stops_a_background_sweep_like_ctrl_c(tmp_path):
    """Started with `&`, a sweep ignores SIGINT; SIGTERM must still run its `finally` blocks (the
    callers' archive packing, sweep.json's last state) and take its workers with it."""
    background = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"  # as a shell's `cmd &`
    sweep, workers = _start_sleeping_sweep(tmp_path, background, wrap=True)
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=60) == 130
    assert (tmp_path / "caught").read_text() == "stopped by signal SIGTERM"
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert summary["counts"]["pending"] == 2 and "finished" in summary
    _assert_die(workers)


def test_sigterm_handler_is_scoped_to_the_sweep(tmp_path):
    """After run_sweep returns, SIGTERM's action is the one it found: the default is restored, and a
    host program's own handler (Ray's, once Ray started in this process) is never replaced."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_sweep(_spec(), tmp_path / "a", workers=1, runner=fingerprinting_runner, progress=False)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def host(signum, frame):  # pragma: no cover - never called
            pass

        signal.signal(signal.SIGTERM, host)
        run_sweep(_spec(), tmp_path / "b", workers=1, runner=fingerprinting_runner, progress=False)
        assert signal.getsignal(signal.SIGTERM) is host
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_corrupt_run_json_is_reported_as_unreadable_not_relabelled(tmp_path):
    from pmp.experiments import report

    spec = parse_sweep({"name": "v", "grid": {"method": ["mp"], "rate": [0.9], "seed": [0], "pruning.scope": ["global"]}})
    run_sweep(spec, tmp_path, workers=1, runner=fingerprinting_runner, progress=False)
    (info,) = tmp_path.glob("*/run.json")
    assert "pruning.scope=global" in report(tmp_path).records[0].row["variant"]
    info.write_text(info.read_text().replace('"global"', '"globbl"'))
    rep = report(tmp_path)
    assert not rep.records and rep.unreadable == [info]
