"""The deep ensemble (pmp/models/ensemble.py): probability fusion, members trained on their own
losses and batches, resumes, every pruning method through the trainer, and the generic sparse
runtime's parity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.export import load_sparse, save_compact
from pmp.export.bench import magnitude_prune, with_random_batchnorm
from pmp.export.generic import SparseGeneric
from pmp.models import create_model, model_dataset_fields
from pmp.models.ensemble import fuse
from pmp.pruning.base import METHODS
from pmp.training import apply_overrides, load_config, run_experiment
from pmp.training.config import ExperimentConfig
from pmp.training.checkpoint import load_tensors

SMALL = dict(filters=4, hidden=8)
SIZES = dict(num_nodes=21, in_frames=8, in_channels=3, num_classes=5)


@settings(max_examples=30, deadline=None)
@given(members=st.integers(1, 4), batch=st.integers(1, 5), classes=st.integers(1, 7), scale=st.floats(0.01, 50),
       seed=st.integers(0, 99))
def test_fuse_is_the_log_of_the_mean_probability(members, batch, classes, scale, seed):
    logits = [scale * torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
              for i in range(members)]
    want = torch.stack([z.softmax(-1) for z in logits]).mean(0)
    torch.testing.assert_close(fuse(logits).exp(), want)
    torch.testing.assert_close(fuse(logits).exp().sum(-1), torch.ones(batch, dtype=torch.float64))


def test_the_output_is_the_fused_prediction():
    torch.manual_seed(0)
    model = create_model("ensemble", **SIZES, persons=1, edges=None, members=3, kwargs=SMALL).eval()
    x = torch.randn(4, 8, 21, 3)
    with torch.no_grad():
        fused = model(x)
        torch.testing.assert_close(fused, fuse([m(x) for m in model.members]))
    assert fused.shape == (4, 5) and len(model.members) == 3


def test_bad_ensembles_are_rejected_by_name():
    assert set(model_dataset_fields("ensemble")) >= set(model_dataset_fields("stgcn")) | set(model_dataset_fields("ddnet"))
    with pytest.raises(ValueError, match="cannot itself be an ensemble"):
        create_model("ensemble", **SIZES, model="ensemble")
    with pytest.raises(ValueError, match="members must be an integer >= 1"):
        create_model("ensemble", **SIZES, persons=1, members=0)
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['filters'\]"):
        create_model("ensemble", **SIZES, persons=1, filters=4)
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("ensemble", **SIZES, model="nope")


def _cfg(**over) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), {
        "data.name": "synthetic", "data.options": {"seed": 0, "num_sequences": 60}, "preprocess.frames": 8,
        "train.epochs": 2, "train.batch_size": 32, "train.threads": 1, **over,
    })


def _weights(run) -> dict[str, torch.Tensor]:
    return load_tensors(run / "model.safetensors")


def test_member_zero_trains_as_the_backbone_alone_and_the_others_on_their_own_batches(tmp_path):
    """members=1: same initialisation, batches, loss and steps as the plain backbone, so the same
    weights to the bit. members=2: the mean loss halves member 0's gradient, which SGD at twice the
    learning rate undoes exactly (powers of two), so member 0 is again the backbone alone to the bit:
    member 1 does not touch it. Member 1 draws its own init, order and augmentation."""
    def run(name, kwargs, lr, folder):
        sgd = {"train.optimizer": "sgd", "train.lr": lr, "train.weight_decay": 0.0, "augment.rotate": 10.0}
        return run_experiment(_cfg(**{"model.name": name, "model.kwargs": kwargs, **sgd}), tmp_path / folder)

    small = {**SMALL, "dropout": 0.0}
    alone = run("ddnet", small, 0.05, "alone")
    one = run("ensemble", {"members": 1, "kwargs": small}, 0.05, "one")
    two = run("ensemble", {"members": 2, "kwargs": small}, 0.1, "two")
    assert one["class_avg_acc"] == alone["class_avg_acc"]
    a, b, c = _weights(tmp_path / "alone"), _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert sorted(b) == sorted(f"members.0.{k}" for k in a)
    for k, v in a.items():
        assert torch.equal(b[f"members.0.{k}"], v), k
        assert torch.equal(c[f"members.0.{k}"], v), k
    weights = [k for k, v in a.items() if v.dim() > 1]
    assert all(not torch.allclose(c[f"members.1.{k}"], c[f"members.0.{k}"]) for k in weights)
    assert two["params"] == 2 * alone["params"]


def test_an_ensemble_resumes_to_the_same_weights(tmp_path):
    """Each member's generators are in the checkpoint: a run killed after epoch 2 ends bit-identical."""
    cfg = _cfg(**{"model.name": "ensemble", "model.kwargs": {"members": 2, "kwargs": SMALL}, "train.epochs": 3,
                  "augment.rotate": 10.0, "train.mixup": 0.2})
    run_experiment(cfg, tmp_path / "full")

    class Kill(Exception):
        pass

    def kill_after_2(epoch, row):
        if epoch == 2:
            raise Kill

    with pytest.raises(Kill):
        run_experiment(cfg, tmp_path / "killed", on_epoch_end=kill_after_2)
    run_experiment(cfg, tmp_path / "killed")
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_every_method_trains_an_ensemble(tmp_path):
    for method in sorted(set(METHODS) - {"dense"}):
        options = {"lth": {"rounds": 1}, "mrmp": {"rates": [0.8, 0.9]}}.get(method, {})
        cfg = _cfg(**{"model.name": "ensemble", "model.kwargs": {"members": 2, "kwargs": SMALL}, "train.epochs": 1,
                      "pruning.method": method, "pruning.rate": 0.9, "pruning.options": options})
        metrics = run_experiment(cfg, tmp_path / method)
        assert metrics["exact_count"] and abs(metrics["achieved_rate"] - 0.9) < 0.02, method
        assert any(name.startswith("members.1.") for name in metrics["layer_density"]), method


@settings(max_examples=5, deadline=None)
@given(model=st.sampled_from(["ddnet", "stgcn"]), members=st.integers(1, 3), batch=st.sampled_from([1, 3, 17]),
       rate=st.sampled_from([0.5, 0.9, 0.98]), seed=st.integers(0, 9))
def test_generic_runtime_matches_the_ensemble(tmp_path_factory, model, members, batch, rate, seed):
    small = SMALL if model == "ddnet" else dict(channels=[4, 8], strides=[1, 2], kernel=3)
    kwargs = dict(SIZES, persons=1, edges=[[i, i + 1] for i in range(20)], model=model, members=members, kwargs=small)
    torch.manual_seed(seed)
    dense = with_random_batchnorm(create_model("ensemble", **kwargs)).eval()
    masks = magnitude_prune(dense, rate)
    module = load_sparse(save_compact(dense, {"model": "ensemble", "kwargs": kwargs}, masks,
                                      tmp_path_factory.mktemp("ens") / "m.pmp"))
    assert isinstance(module, SparseGeneric) and module.sparse_layers
    x = torch.randn(batch, *module.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = dense(x)
        assert float((ref - module(x)).abs().max()) < 1e-5 * max(1.0, float(ref.abs().max()))
    assert math.isclose(float(module(x).exp().sum(-1).mean()), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("ensemble, single", [
    ("fpha_ensemble", "fpha_ddnet"), ("sbu_ensemble", "sbu_ddnet"), ("sbu_agcn_ensemble", "sbu"),
])
def test_ensemble_configs_are_their_member_configs_twice(ensemble, single):
    """The docs read each ensemble config as `single`'s network and training, twice: the paired
    checks against `members=1` compare exactly that, so the two files must not drift apart."""
    root = Path(__file__).resolve().parents[1] / "configs"
    ens, one = (load_config(root / f"{n}.yaml").to_dict() for n in (ensemble, single))
    model, member = ens.pop("model"), one.pop("model")
    assert ens == one
    assert model["name"] == "ensemble" and model["kwargs"]["members"] == 2
    assert model["kwargs"]["model"] == member["name"] and model["kwargs"]["kwargs"] == member["kwargs"]
