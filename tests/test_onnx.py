"""ONNX export (`pmp export RUN --format onnx`) of every registered backbone, checked by
onnx.checker and run by ONNX Runtime against the masked dense torch model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

from pmp.cli import main
from pmp.export.onnx import export_onnx, ort_session, sparsify, to_onnx
from pmp.models import list_models
from pmp.training.trainer import load_trained_model

TINY = ["--dataset", "synthetic", "--epochs", "1", "--preprocess.frames", "16", "--train.threads", "1",
        "--set", "data.options={num_sequences: 40}", "-q"]


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module", params=list_models())
def pruned_run(request, tmp_path_factory):
    """A finished run of each registered backbone, magnitude-pruned at 90% (pruned weights zero)."""
    run = tmp_path_factory.mktemp(request.param) / "run"
    assert main(["train", *TINY, "--model", request.param, "--method", "mp", "--rate", "0.9",
                 "--run-dir", str(run)]) == 0
    return run


def test_onnx_runtime_gives_the_masked_dense_outputs(pruned_run, tmp_path, capsys):
    """Per backbone: the exported graph passes onnx.checker's full check and ONNX Runtime gives the
    masked dense model's logits, dense initializers or sparse tensors alike (the latter smaller)."""
    path, sparse_path = tmp_path / "model.onnx", tmp_path / "sparse.onnx"
    assert main(["export", str(pruned_run), "--format", "onnx", "-o", str(path)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert sparsify(proto) > 0
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(sparse_path))
    assert sparse_path.stat().st_size < path.stat().st_size
    model, spec = load_trained_model(pruned_run)
    sessions = [ort_session(p, threads=1) for p in (path, sparse_path)]
    kw = spec["kwargs"]
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 5):  # the batch axis is dynamic
        x = torch.randn(batch, kw["in_frames"], kw["num_nodes"], kw["in_channels"], generator=gen)
        with torch.no_grad():
            want = model(x).numpy()
        got, got_sparse = (s.run(None, {"x": x.numpy()})[0] for s in sessions)
        assert got.shape == want.shape and _relative_error(got, want) <= 1e-5
        np.testing.assert_array_equal(got, got_sparse)


def test_cli_sparse_export_and_metadata(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--method", "mp", "--rate", "0.9", "--set",
                 "model.kwargs={heads: 2, attn_dim: 4, gc_dim: 4, hidden: 16}", "--run-dir", str(run)]) == 0
    path = tmp_path / "sparse.onnx"
    assert main(["export", str(run), "-o", str(path), "--onnx-sparse"]) == 0  # format from the suffix
    proto = onnx.load(str(path))
    assert any(n.op_type == "Constant" and n.attribute[0].name == "sparse_value" for n in proto.graph.node)
    spec = json.loads({p.key: p.value for p in proto.metadata_props}["pmp.model"])
    saved = json.loads((run / "model.json").read_text())
    assert all(spec[k] == saved[k] for k in ("model", "kwargs", "class_names", "preprocess"))
    dense = export_onnx(run, tmp_path / "dense.onnx")
    assert path.stat().st_size < dense.stat().st_size


def test_stored_weights_are_the_masked_weights(tmp_path):
    """Pruned weights stay exact zeros through the exporter (no folding makes them non-zero)."""
    from pmp.export.bench import magnitude_prune
    from pmp.models import create_model

    torch.manual_seed(0)
    model = create_model("agcn", num_nodes=5, in_frames=4, in_channels=3, num_classes=3, heads=2, attn_dim=4,
                         gc_dim=4, hidden=8).eval()
    masks = magnitude_prune(model, 0.75)
    path = to_onnx(model, torch.zeros(2, 4, 5, 3), tmp_path / "m.onnx")
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    fc = stored["fc.weight"]
    assert fc.shape == masks["fc.weight"].shape
    assert np.count_nonzero(fc) == int(masks["fc.weight"].sum())


def test_refuses_an_unfinalised_run(pruned_run, tmp_path, capsys):
    model, _ = load_trained_model(pruned_run)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(iter(load_file(str(pruned_run / "masks.safetensors"))))
    broken = tmp_path / "run"
    broken.mkdir()
    for f in ("model.json", "masks.safetensors", "config.yaml"):
        (broken / f).write_bytes((pruned_run / f).read_bytes())
    state[name] = state[name] + 1.0  # non-zero everywhere, also outside the mask
    save_file(state, str(broken / "model.safetensors"))
    assert main(["export", str(broken), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "non-zero weights outside the mask" in err and name in err


def test_pmp_only_options_are_refused_for_onnx(pruned_run, tmp_path, capsys):
    assert main(["export", str(pruned_run), "-o", str(tmp_path / "m.onnx"), "--fp16"]) == 2
    assert ".pmp files only" in capsys.readouterr().err
