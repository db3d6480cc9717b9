"""The Ray backend on a real local Ray instance, with the fake runner of test_sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmp.experiments import parse_sweep, run_sweep

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pmp[ray]'")

from test_sweep import fake_runner  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture(scope="module")
def local_ray():
    tests_dir = str(Path(__file__).parent)  # so that Ray workers can import the fake runner's module
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": tests_dir}})
    yield
    ray.shutdown()


def test_ray_backend_runs_a_sweep_and_records_failures(local_ray, tmp_path):
    spec = parse_sweep({
        "name": "ray",
        "grid": {"method": ["dense", "pmp", "mp"], "rate": [0.9], "seed": [0, 1]},
        "method_overrides": {"mp": {"pruning.options.fail": True}},
    })  # fmt: skip
    result = run_sweep(spec, tmp_path, backend="ray", runner=fake_runner, progress=False)
    assert result.count("done") == 4
    assert sorted(r.run_id for r in result.failed) == ["mp_r0.9_s0", "mp_r0.9_s1"]
    assert "RuntimeError: injected failure" in (tmp_path / "mp_r0.9_s0" / "error.txt").read_text()
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert summary["backend"] == "ray" and summary["workers"] == 2
    assert {line.split()[1] for line in (tmp_path / "calls.log").read_text().splitlines()} == {"1"}
    assert ray.is_initialized()  # the sweep leaves a Ray it did not start running

    again = run_sweep(spec, tmp_path, backend="ray", runner=fake_runner, progress=False)
    assert again.count("skipped") == 4 and again.count("failed") == 2  # failed runs are retried
