"""The `pmp` command line end to end on the built-in synthetic data (tiny sizes)."""

from __future__ import annotations

import json

import pytest

from pmp.cli import main
from pmp.export import read_compact

TINY = ["--dataset", "synthetic", "--epochs", "2", "--preprocess.frames", "8", "--train.threads", "1",
        "--set", "model.kwargs={heads: 2, attn_dim: 4, gc_dim: 4, hidden: 16}", "-q"]


def test_train_eval_export_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "pmp", "--rate", "0.9", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pmp rate=0.9" in out and "achieved rate 0.90" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "pmp" and metrics["exact_count"] and metrics["epochs"] == 2

    assert main(["eval", str(run), "--json", str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["class_avg_acc"] == pytest.approx(metrics["class_avg_acc"])
    assert len(evaluated["confusion"]) == len(metrics["class_names"])

    model = tmp_path / "model.pmp"
    assert main(["export", str(run), "-o", str(model)]) == 0
    assert main(["predict", str(model), "-o", str(tmp_path / "pred.txt")]) == 0
    out = capsys.readouterr().out
    assert f"{100 * metrics['class_avg_acc']:.2f}%" in out  # sparse inference gives the same accuracy
    n_test = sum(map(sum, metrics["confusion"]))
    assert len((tmp_path / "pred.txt").read_text().split()) == n_test

    raw, half = tmp_path / "raw.pmp", tmp_path / "half.pmp"
    assert main(["export", str(run), "-o", str(raw), "--no-compress"]) == 0
    assert main(["export", str(run), "-o", str(half), "--fp16"]) == 0
    assert half.stat().st_size < model.stat().st_size < raw.stat().st_size
    assert read_compact(raw).spec == read_compact(model).spec


def test_every_config_field_is_a_flag(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--pruning.scope", "global", "--method", "mp", "--rate", "0.5",
                 "--train.optimizer", "sgd", "--train.lr", "0.01", "--run-dir", str(run)]) == 0
    cfg = (run / "config.yaml").read_text()
    assert "scope: global" in cfg and "optimizer: sgd" in cfg and "lr: 0.01" in cfg


@pytest.mark.parametrize("argv, needle", [
    (["train", "nosuch.yaml"], "config file not found"),
    (["train", "--dataset", "synthetic", "--method", "nosuch"], "unknown pruning method"),
    (["train", "--set", "train.epochs"], "KEY=VALUE"),
    (["eval", "/nonexistent/run"], "/nonexistent/run/config.yaml"),
    (["bench-inference", "--block", "0"], "--repeats and --block must be at least 1"),
])
def test_errors_are_one_clear_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "agcn" in out and all(m in out for m in ["dense", "pmp", "mp", "gmp", "lth", "snip"])


def test_bench_inference_prints_a_summary_and_writes_the_file(tmp_path, capsys):
    import numba
    import torch

    threads = torch.get_num_threads(), numba.get_num_threads()
    out = tmp_path / "inference.json"
    try:
        assert main(["bench-inference", "--rates", "0.99", "--repeats", "2", "--threads", "1", "--out", str(out)]) == 0
    finally:  # the command sets them for the whole process
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    printed = capsys.readouterr().out
    assert "rate 0.99: size x" in printed and "batch64: layers x" in printed and str(out) in printed
    result = json.loads(out.read_text())
    assert result["machine"]["torch_threads"] == 1 and result["0.99"]["repeats"] == 2
