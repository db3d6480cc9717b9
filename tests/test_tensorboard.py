"""`pmp train --tensorboard`: event files read back with TensorBoard's own reader (EventAccumulator)."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pmp.cli import main

TINY = ["--dataset", "synthetic", "--epochs", "3", "--preprocess.frames", "8", "--train.threads", "1",
        "--train.eval_every", "1", "--set", "model.kwargs={heads: 2, attn_dim: 4, gc_dim: 4, hidden: 16}",
        "--set", "data.options={num_sequences: 60}", "-q"]


def _events(run):
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_pmp_run_writes_every_scalar_and_the_histograms(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "pmp", "--rate", "0.9", "--tensorboard", "--run-dir", str(run)]) == 0
    acc = _events(run)
    tags = set(acc.Tags()["scalars"])
    layers = ["query.weight", "key.weight", "gc.weight", "fc.weight"]
    want = {"train/loss", "train/penalty", "train/train_acc", "train/test_class_avg_acc", "train/lr",
            "density/achieved", *(f"density/{n}" for n in layers), *(f"pmp/sharpness/{n}" for n in layers),
            *(f"pmp/band_edge/{n}" for n in layers)}
    assert want <= tags
    with open(run / "log.csv") as f:  # the CSV log stays, and says the same
        rows = list(csv.DictReader(f))
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3] == [int(r["epoch"]) for r in rows]
    assert [e.value for e in loss] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)
    sharp = [e.value for e in acc.Scalars("pmp/sharpness/fc.weight")]
    assert sharp == sorted(sharp) and sharp[0] < sharp[-1]  # annealed upwards
    density = [e.value for e in acc.Scalars("density/achieved")]
    assert all(0 < d <= 1 for d in density)
    assert {"latent/fc.weight", "prior/fc.weight"} <= set(acc.Tags()["histograms"])
    assert len(acc.Histograms("latent/fc.weight")) == 3


def test_mask_method_density_is_the_kept_fraction_and_off_by_default(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "gmp", "--rate", "0.5", "--set", "train.tensorboard=true",
                 "--run-dir", str(run)]) == 0
    acc = _events(run)
    assert "pmp/sharpness/fc.weight" not in acc.Tags()["scalars"]
    final = acc.Scalars("density/fc.weight")[-1].value
    assert final == pytest.approx(0.5, abs=1e-3)  # gmp's schedule has reached the rate by the last epoch
    plain = tmp_path / "plain"
    assert main(["train", *TINY, "--run-dir", str(plain)]) == 0
    assert not (plain / "tensorboard").exists()
