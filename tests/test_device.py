"""`--device auto|cpu|cuda` (train.device): the choice, its errors, and (marked `gpu`, skipped
without CUDA) every pruning method training on CUDA, deterministically, like the CPU path."""

from __future__ import annotations

import json

import pytest
import torch

from pmp.cli import main
from pmp.pruning.bandstop import BandStop
from pmp.pruning.base import METHODS
from pmp.training.device import resolve_device

TINY = ["--dataset", "synthetic", "--epochs", "2", "--preprocess.frames", "8", "--train.threads", "1",
        "--set", "model.kwargs={heads: 2, attn_dim: 4, gc_dim: 4, hidden: 16}", "--set",
        "data.options={num_sequences: 60}", "-q"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_is_the_cpu_without_cuda_and_cuda_is_never_faked(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(ValueError, match="cuda asked for, but torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="'tpu' is not one of auto, cpu, cuda"):
        resolve_device("tpu")
    assert main(["train", *TINY, "--device", "cuda", "--run-dir", str(tmp_path / "r")]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_device_is_not_part_of_the_result(tmp_path, capsys):
    """The same run with --device cpu and auto (here: the CPU) is one result, not another config's."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "mp", "--rate", "0.5", "--device", "cpu", "--run-dir", str(run)]) == 0
    first = json.loads((run / "metrics.json").read_text())
    if not torch.cuda.is_available():
        assert main(["train", *TINY, "--method", "mp", "--rate", "0.5", "--run-dir", str(run)]) == 0
        assert json.loads((run / "metrics.json").read_text())["class_avg_acc"] == first["class_avg_acc"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_on_cuda_deterministically(method, tmp_path):
    rate = [] if method == "dense" else ["--rate", "0.9"]
    results = []
    for i in range(2):
        run = tmp_path / f"run{i}"
        assert main(["train", *TINY, "--method", method, *rate, "--device", "cuda", "--run-dir", str(run)]) == 0
        results.append(json.loads((run / "metrics.json").read_text()))
    assert results[0]["class_avg_acc"] == results[1]["class_avg_acc"]
    assert results[0]["exact_count"] and 0 <= results[0]["class_avg_acc"] <= 1
    assert main(["export", str(tmp_path / "run0"), "-o", str(tmp_path / "m.pmp")]) == 0  # weights back on the CPU


@pytest.mark.gpu
@needs_gpu
def test_band_stop_on_cuda_is_the_torch_path_and_agrees_with_the_kernel():
    w = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    cpu = BandStop(w, edge=0.5, sharpness=30.0)
    cuda = BandStop(w.cuda(), edge=0.5, sharpness=30.0)
    wc, wg = w.clone().requires_grad_(), w.cuda().requires_grad_()
    out_c, out_g = cpu(wc), cuda(wg)
    out_c.sum().backward()
    out_g.sum().backward()
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wg.grad.cpu(), wc.grad, rtol=1e-4, atol=1e-5)
