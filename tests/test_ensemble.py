"""The deep ensemble (pmp/models/ensemble.py): probability fusion, members trained on their own
losses, every pruning method through the trainer, and the generic sparse runtime's parity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.export import load_sparse, save_compact
from pmp.export.bench import magnitude_prune, with_random_batchnorm
from pmp.export.generic import SparseGeneric
from pmp.models import create_model, model_dataset_fields
from pmp.models.ensemble import MemberLogits, fuse
from pmp.pruning.base import METHODS
from pmp.training import apply_overrides, run_experiment
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


def test_training_mode_returns_each_member_and_eval_the_fused_prediction():
    torch.manual_seed(0)
    model = create_model("ensemble", **SIZES, persons=1, edges=None, members=3, kwargs=SMALL)
    x = torch.randn(4, 8, 21, 3)
    out = model(x)
    assert isinstance(out, MemberLogits) and len(out.members) == 3
    model.eval()
    with torch.no_grad():
        fused = model(x)
        torch.testing.assert_close(fused, fuse([m(x) for m in model.members]))
    assert fused.shape == (4, 5)


def test_members_learn_as_they_would_alone():
    """The averaged loss gives member 0 the gradient of its own loss (divided by the member count),
    whatever member 1's weights are: the members share nothing."""
    torch.manual_seed(0)
    model = create_model("ensemble", **SIZES, persons=1, edges=None, members=2, kwargs={**SMALL, "dropout": 0.0})
    x, y = torch.randn(6, 8, 21, 3), torch.randint(0, 5, (6,))

    def member0_grads() -> list[torch.Tensor]:
        model.zero_grad()
        out = model(x)
        (sum(torch.nn.functional.cross_entropy(z, y) for z in out.members) / 2).backward()
        return [p.grad.clone() for p in model.members[0].parameters()]

    before = member0_grads()
    with torch.no_grad():
        for p in model.members[1].parameters():
            p.add_(torch.randn_like(p))
    after = member0_grads()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model.members[0](x), y).backward()
    alone = [p.grad / 2 for p in model.members[0].parameters()]
    for b, a, s in zip(before, after, alone):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(b, s)


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


def test_one_member_trains_exactly_as_the_backbone_alone(tmp_path):
    """members=1: same initialisation, same loss, same steps, so the same weights and accuracy as
    the plain backbone: the ensemble adds nothing to how a member learns."""
    alone = run_experiment(_cfg(**{"model.name": "ddnet", "model.kwargs": SMALL}), tmp_path / "alone")
    one = run_experiment(_cfg(**{"model.name": "ensemble", "model.kwargs": {"members": 1, "kwargs": SMALL}}),
                         tmp_path / "one")
    assert one["class_avg_acc"] == alone["class_avg_acc"]
    a, b = load_tensors(tmp_path / "alone" / "model.safetensors"), load_tensors(tmp_path / "one" / "model.safetensors")
    assert sorted(b) == sorted(f"members.0.{k}" for k in a)
    for k, v in a.items():
        torch.testing.assert_close(b[f"members.0.{k}"], v, rtol=0, atol=0)


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
