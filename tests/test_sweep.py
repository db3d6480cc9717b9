"""Grid expansion, resume and failure handling of sweeps, with a fake runner instead of training."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from pmp.experiments import SweepSpecError, expand_grid, load_sweep, parse_sweep, run_sweep
from pmp.experiments.sweep import SweepBackendError, build_configs

REPO = Path(__file__).resolve().parents[1]


def fake_runner(cfg, run_dir: Path) -> dict:
    """Stands in for training: logs the call and torch's thread count, fails on request, and writes
    metrics.json last and atomically, like the real runner."""
    import torch

    with open(run_dir.parent / "calls.log", "a") as f:  # O_APPEND: safe across worker processes
        f.write(f"{run_dir.name} {torch.get_num_threads()}\n")
    if cfg.pruning.options.get("fail"):
        raise RuntimeError("injected failure")
    if cfg.pruning.options.get("crash"):
        os._exit(3)  # a worker killed outright, as by the out-of-memory killer
    time.sleep(cfg.pruning.options.get("sleep", 0.0))
    metrics = {
        "dataset": cfg.data.name, "method": cfg.pruning.method, "rate": cfg.pruning.rate, "seed": cfg.train.seed,
        "split": cfg.data.split, "class_avg_acc": 0.5 + 0.01 * cfg.train.seed, "epochs": cfg.train.epochs,
    }  # fmt: skip
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics))
    os.replace(tmp, run_dir / "metrics.json")
    return metrics


def _spec(**extra):
    grid = {"method": ["dense", "pmp", "lth"], "rate": [0.5, 0.9], "seed": [0, 1], "split": ["1:1"]}
    return parse_sweep({"name": "t", "grid": {**grid, **extra.pop("grid", {})}, **extra})


def _calls(out: Path) -> list[str]:
    return [line.split()[0] for line in (out / "calls.log").read_text().splitlines()]


# ----------------------------------------------------------------------------------------- grid
def test_grid_counts_and_dense_once_at_rate_zero():
    runs = expand_grid(_spec())
    assert len(runs) == 2 + 2 * 2 * 2  # dense: one per seed; pmp, lth: rates x seeds
    dense = [r for r in runs if r.method == "dense"]
    assert [r.run_id for r in dense] == ["dense_r0_s0_f1-1", "dense_r0_s1_f1-1"]
    assert all(r.overrides["pruning.rate"] == 0.0 for r in dense)
    assert "pmp_r0.9_s1_f1-1" in {r.run_id for r in runs}
    assert len({r.run_id for r in runs}) == len(runs)


def test_grid_overrides_and_method_overrides():
    spec = _spec(overrides={"train.epochs": 7}, method_overrides={"lth": {"pruning.options.rounds": 2}})
    for r in expand_grid(spec):
        assert r.overrides["train.epochs"] == 7
        assert r.overrides["data.split"] == "1:1" and r.overrides["pruning.method"] == r.method
        assert ("pruning.options.rounds" in r.overrides) == (r.method == "lth")


def test_extra_axes_get_a_stable_hash_and_dense_ignores_pruning_axes():
    spec = _spec(grid={"pruning.scope": ["layer", "global"], "train.lr": [0.1]})
    runs = expand_grid(spec)
    assert len(runs) == 2 + 2 * 2 * 2 * 2  # dense is not repeated per scope
    ids = [r.run_id for r in runs]
    assert ids == [r.run_id for r in expand_grid(_spec(grid={"train.lr": [0.1], "pruning.scope": ["layer", "global"]}))]
    pmp = [i for i in ids if i.startswith("pmp_r0.9_s0_f1-1_x")]
    assert len(pmp) == 2 and pmp[0] != pmp[1]
    assert {r.extra_axes["pruning.scope"] for r in runs if r.method == "pmp"} == {"layer", "global"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"grid": {"method": ["pmp"]}, "colour": 1}, "unknown key(s) colour"),
        ({"grid": {"method": ["pmp"]}, "method_overrides": {"lth": {"train.epochs": 1}}}, "'lth' is not in grid"),
        ({"grid": {"seed": [0]}, "overrides": {"train.seed": 1}}, "train.seed: both a grid axis and an override"),
        ({"grid": {"seed": []}}, "grid.train.seed is empty"),
    ],
)
def test_invalid_sweeps_name_the_key(data, message):
    with pytest.raises(SweepSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_sweep(data)


def test_base_config_resolves_beside_the_sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 3}\n")
    (tmp_path / "s.yaml").write_text("base: base.yaml\ngrid: {method: [dense, mp], rate: [0.5]}\n")
    spec = load_sweep(tmp_path / "s.yaml")
    assert spec.name == "s" and spec.base == tmp_path / "base.yaml"
    configs = build_configs(spec, expand_grid(spec), data_root="/data")
    assert [(c.pruning.method, c.pruning.rate, c.train.epochs, c.data.root) for c in configs] == [
        ("dense", 0.0, 3, "/data"),
        ("mp", 0.5, 3, "/data"),
    ]


def test_split_names_reach_the_config_verbatim():
    spec = parse_sweep({"grid": {"split": ["1:1", "3"]}})
    assert [c.data.split for c in build_configs(spec, expand_grid(spec))] == ["1:1", "3"]


def test_demo_sweep_expands_and_builds():
    spec = load_sweep(REPO / "configs/sweeps/demo.yaml")
    configs = build_configs(spec, expand_grid(spec))
    assert len(configs) >= 4 and {c.data.name for c in configs} == {"synthetic"}


# ----------------------------------------------------------------------------------------- sweep
def test_interrupted_sweep_resumes_only_unfinished_runs(tmp_path):
    spec = _spec(grid={"rate": [0.9], "seed": [0], "method": ["dense", "pmp", "mp", "gmp"]})
    first = run_sweep(spec, tmp_path, workers=1, runner=fake_runner, progress=False)
    assert first.ok and first.count("done") == 4
    mtimes = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")}

    for name in mtimes:
        if name.startswith("pmp"):
            for f in (tmp_path / name).iterdir():
                f.unlink()
            (tmp_path / name).rmdir()  # deleted
        if name.startswith("mp"):
            (tmp_path / name / "metrics.json").unlink()  # half-written: the runner had not finished
            (tmp_path / name / "checkpoint.pt").write_text("kept for the runner to resume from")

    second = run_sweep(spec, tmp_path, workers=2, runner=fake_runner, progress=False)  # worker processes
    assert {r.run_id: r.status for r in second.runs} == {
        "dense_r0_s0_f1-1": "skipped", "pmp_r0.9_s0_f1-1": "done", "mp_r0.9_s0_f1-1": "done",
        "gmp_r0.9_s0_f1-1": "skipped",
    }  # fmt: skip
    calls = (tmp_path / "calls.log").read_text().splitlines()[4:]
    assert sorted(calls) == ["mp_r0.9_s0_f1-1 1", "pmp_r0.9_s0_f1-1 1"]  # one torch thread per worker
    assert (tmp_path / "mp_r0.9_s0_f1-1" / "checkpoint.pt").exists()
    for name in ("dense_r0_s0_f1-1", "gmp_r0.9_s0_f1-1"):
        assert (tmp_path / name / "metrics.json").stat().st_mtime_ns == mtimes[name]
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 2, "failed": 0, "pending": 0}


def test_failing_run_is_recorded_and_the_others_finish(tmp_path):
    spec = _spec(grid={"rate": [0.9], "seed": [0]}, method_overrides={"pmp": {"pruning.options.fail": True}})
    result = run_sweep(spec, tmp_path, workers=1, runner=fake_runner, progress=False)
    assert [r.run_id for r in result.failed] == ["pmp_r0.9_s0_f1-1"]
    assert result.count("done") == 2 and not result.ok
    assert "RuntimeError: injected failure" in (tmp_path / "pmp_r0.9_s0_f1-1" / "error.txt").read_text()
    summary = json.loads((tmp_path / "sweep.json").read_text())
    failed = [r for r in summary["runs"] if r["status"] == "failed"]
    assert failed == [{"run_id": "pmp_r0.9_s0_f1-1", "status": "failed", "wall_s": failed[0]["wall_s"],
                       "error": "RuntimeError: injected failure", "error_file": "pmp_r0.9_s0_f1-1/error.txt"}]  # fmt: skip
    assert "FAILED pmp_r0.9_s0_f1-1: RuntimeError: injected failure" in result.summary()


def test_a_dead_worker_fails_its_run_and_the_sweep_goes_on(tmp_path):
    """The crashing run breaks the pool and takes whatever ran beside it (pmp, still asleep) with
    it; every lost run is retried alone in a fresh worker, so only the culprit fails."""
    spec = _spec(grid={"method": ["dense", "pmp", "mp", "gmp"], "rate": [0.9], "seed": [0]},
                 method_overrides={"dense": {"pruning.options.crash": True}, "pmp": {"pruning.options.sleep": 1.0}})
    result = run_sweep(spec, tmp_path, workers=2, runner=fake_runner, progress=False)
    status = {r.run_id: r.status for r in result.runs}
    assert status == {"dense_r0_s0_f1-1": "failed", "pmp_r0.9_s0_f1-1": "done", "mp_r0.9_s0_f1-1": "done",
                      "gmp_r0.9_s0_f1-1": "done"}  # fmt: skip
    assert "BrokenProcessPool" in (tmp_path / "dense_r0_s0_f1-1" / "error.txt").read_text()
    assert result.failed[0].error.startswith("outside the runner: ")
    calls = [line.split()[0] for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert calls.count("dense_r0_s0_f1-1") == 2  # its isolated retry crashed too


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(SweepBackendError, match=r"pip install 'pmp\[ray\]'"):
        run_sweep(_spec(grid={"method": ["mp"]}), tmp_path, backend="ray", runner=fake_runner, progress=False)


def test_expensive_runs_start_first(tmp_path):
    spec = _spec(grid={"rate": [0.9], "seed": [0]})
    run_sweep(spec, tmp_path, workers=1, runner=fake_runner, progress=False)
    assert _calls(tmp_path)[0] == "lth_r0.9_s0_f1-1"  # 4x the epochs of the others (3 rounds + 1)


# ----------------------------------------------------------------------------------------- --only
def test_only_runs_a_subset_in_the_same_folders_and_the_rest_resumes(tmp_path):
    spec = _spec()
    part = run_sweep(spec, tmp_path, workers=1, runner=fake_runner, progress=False, only={"seed": [0]})
    assert part.ok and sorted(_calls(tmp_path)) == ["dense_r0_s0_f1-1", "lth_r0.5_s0_f1-1", "lth_r0.9_s0_f1-1",
                                                    "pmp_r0.5_s0_f1-1", "pmp_r0.9_s0_f1-1"]
    rest = run_sweep(spec, tmp_path, workers=1, runner=fake_runner, progress=False)
    assert rest.count("skipped") == 5 and rest.count("done") == 5
    assert len(_calls(tmp_path)) == 10  # nothing trained twice


def test_only_matches_values_as_printed_and_keeps_dense_without_a_rate():
    from pmp.experiments.grid import select_runs

    runs = expand_grid(_spec())
    picked = select_runs(runs, {"rate": ["0.9"], "method": ["dense", "pmp"]})
    assert sorted(r.run_id for r in picked) == ["dense_r0_s0_f1-1", "dense_r0_s1_f1-1",
                                                "pmp_r0.9_s0_f1-1", "pmp_r0.9_s1_f1-1"]
    assert select_runs(runs, {"train.seed": [1], "method": ["lth"]}) == [
        r for r in runs if r.run_id in ("lth_r0.5_s1_f1-1", "lth_r0.9_s1_f1-1")]


@pytest.mark.parametrize("only, message", [
    ({"sed": [0]}, "--only sed: not an axis of this grid"),
    ({"seed": [0, 7]}, "--only seed: no run has 7"),
    ({"method": ["pmp", "gmpp"]}, "no run has gmpp"),
])  # fmt: skip
def test_only_with_a_typo_is_an_error_not_an_empty_sweep(tmp_path, only, message):
    with pytest.raises(SweepSpecError, match=message):
        run_sweep(_spec(), tmp_path, workers=1, runner=fake_runner, progress=False, only=only)
    assert not (tmp_path / "calls.log").exists()


def test_cli_only_parses_repeated_axes(tmp_path, capsys):
    from pmp.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: t\nout: {tmp_path / 'out'}\ngrid: {{method: [dense], seed: [0, 1, 2]}}\n"
                    "overrides: {train.epochs: 1, data.name: synthetic}\n")
    with pytest.raises(SystemExit, match="expected AXIS=V1,V2"):
        main(["sweep", str(spec), "--only", "seed"])
    assert main(["sweep", str(spec), "--only", "seed=0,2", "--workers", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("dense*")) == ["dense_r0_s0", "dense_r0_s2"]


def test_run_folders_a_run_reads_are_made_absolute_for_workers_in_another_directory(tmp_path, monkeypatch):
    """Ray workers run in another directory: a relative train.init / train.teacher (its {split}
    template kept) becomes absolute against the sweep's own."""
    monkeypatch.chdir(tmp_path)
    spec = parse_sweep({"grid": {"method": ["dense"]},
                        "overrides": {"train.init": "runs/a", "train.teacher": "runs/t_f{split}"}})
    (cfg,) = build_configs(spec, expand_grid(spec))
    assert cfg.train.init == str(tmp_path / "runs/a") and cfg.train.teacher == str(tmp_path / "runs/t_f{split}")
    spec = parse_sweep({"grid": {"method": ["dense"]}, "overrides": {"train.teacher": "/abs/t"}})
    assert build_configs(spec, expand_grid(spec))[0].train.teacher == "/abs/t"
