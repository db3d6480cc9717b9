"""The machine fingerprint, the reproducible mode, and warnings for legal but degenerate requests (issue 14)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pmp.data import load_dataset
from pmp.machine import AllocationError, check_allocation, machine_fingerprint
from pmp.training import run_experiment

from test_training import tiny_config  # noqa: E402  (tests/ is on sys.path under pytest)

AVX2 = "avx2" in machine_fingerprint()["cpu_isa"]


@pytest.mark.skipif(not AVX2, reason="pins AVX2 kernels: an x86-64 CPU with AVX2")
def test_the_reproducible_mode_pins_torch_to_avx2_before_it_is_imported():
    code = "import pmp, torch; from pmp.machine import machine_fingerprint as f; m = f(); " \
           "print(m['torch_cpu_capability'], m['reproducible_mode'])"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PMP_REPRODUCIBLE": "1"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["AVX2", "True"]


@pytest.mark.skipif(not AVX2, reason="pins AVX2 kernels: an x86-64 CPU with AVX2")
def test_the_reproducible_flag_reruns_the_command_in_that_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "PMP_REPRODUCIBLE")}
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pmp.cli", "--reproducible", "train", "--epochs", "1", "--preprocess.frames", "8",
           "--set", "data.options={seed: 0, num_sequences: 60}", "--set", "model.kwargs={hidden: 16}", "-q",
           "--run-dir", str(run)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=Path(__file__).parents[1])
    import json

    machine = json.loads((run / "metrics.json").read_text())["machine"]
    assert machine["torch_cpu_capability"] == "AVX2" and machine["reproducible_mode"]
    assert machine["env"]["ATEN_CPU_CAPABILITY"] == "avx2"


def test_a_request_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(AllocationError, match="GiB"):
        check_allocation("a test", 1 << 60)
    check_allocation("a test", 1 << 20)


def test_a_budget_that_empties_a_whole_tensor_warns_naming_it(tmp_path, caplog):
    cfg = tiny_config(**{"pruning.method": "mp", "pruning.rate": 0.999, "train.epochs": 1,
                         "data.options": {"seed": 0, "num_sequences": 60}})
    with caplog.at_level(logging.WARNING):
        m = run_experiment(cfg, tmp_path / "run")
    assert m["emptied_tensors"] and all(name in caplog.text for name in m["emptied_tensors"])


def test_legal_but_suspicious_generic_data_warns_naming_the_file(tmp_path, caplog):
    path = tmp_path / "odd.npz"
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(path, x=np.ones((6, 4, 3, 2)), y=y, split=np.array(["train", "train", "test", "test", "train", "test"]))
    with caplog.at_level(logging.WARNING):
        load_dataset(str(path))
    assert f"{path}: split train/test has no training sequence of class(es) [2]" in caplog.text
    assert f"{path}: every sequence is motionless" in caplog.text
