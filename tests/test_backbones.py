"""The DD-Net and ST-GCN backbones: forward on every dataset layout, every pruning method through the
trainer, PMP's exact rate on convolutions, and the generic sparse runtime against the masked dense
model (any size, every conv mode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pmp.cli import main
from pmp.data.fpha import EDGES as HAND_EDGES
from pmp.data.sbu import EDGES as PAIR_EDGES
from pmp.export import load_sparse, save_compact
from pmp.export.bench import magnitude_prune, with_random_batchnorm
from pmp.export.generic import CompiledJointDistances, SparseConv, SparseGeneric
from pmp.export.sparse import SparseAttentionGCN
from pmp.models import create_model, model_dataset_fields
from pmp.models.layers import JointDistances
from pmp.models.stgcn import adjacency
from pmp.pruning.base import METHODS, create_pruner
from pmp.training import apply_overrides, run_experiment
from pmp.training.config import ExperimentConfig, load_config

BACKBONES = ("ddnet", "stgcn")
OPTIONS = {"lth": {"rounds": 1}, "mrmp": {"rates": [0.8, 0.9]}}  # the shortest schedules
SMALL = {"ddnet": dict(filters=4, hidden=8), "stgcn": dict(channels=[4, 8], strides=[1, 2], kernel=3)}


def _layout(kind: str, nodes: int, seed: int) -> tuple[int, list[list[int]] | None]:
    """(joints, edges) of a dataset layout: FPHA hands, SBU pairs, a random generic graph or none."""
    if kind == "hand":
        return 21, [list(e) for e in HAND_EDGES]
    if kind == "pair":
        return 30, [list(e) for e in PAIR_EDGES]
    if kind == "graph":
        rng = np.random.default_rng(seed)
        return nodes, [[int(rng.integers(0, i)), i] for i in range(1, nodes)]  # a random tree
    return nodes, None


def _build(name: str, nodes: int, frames: int, chans: int, edges, classes: int = 5, **kw) -> nn.Module:
    if "edges" in model_dataset_fields(name):
        kw["edges"] = edges
    return create_model(name, num_nodes=nodes, in_frames=frames, in_channels=chans, num_classes=classes, **kw)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(BACKBONES), kind=st.sampled_from(["hand", "pair", "graph", "none"]),
       nodes=st.integers(1, 12), frames=st.integers(1, 6), chans=st.sampled_from([2, 3, 5]), seed=st.integers(0, 99))
def test_forward_on_every_layout(name, kind, nodes, frames, chans, seed):
    """Hands (21 joints), two persons (30), generic graphs with or without edges, 2-D or 3-D or
    extra feature channels, sequences as short as one frame: finite logits and gradients."""
    nodes, edges = _layout(kind, nodes, seed)
    torch.manual_seed(seed)
    model = _build(name, nodes, frames, chans, edges, **SMALL[name])
    x = torch.randn(3, frames, nodes, chans, requires_grad=True)
    x.data[:, :, nodes // 2 :] = 0  # coincident joints (an absent person): distance zero
    logits = model(x)
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ddnet_reads_only_its_coordinate_channels():
    """Extra preprocessing channels beyond `coords` do not change the output; coords is clipped."""
    torch.manual_seed(0)
    model = _build("ddnet", 21, 8, 6, None, coords=3, **SMALL["ddnet"]).eval()
    x = torch.randn(2, 8, 21, 6)
    y = x.clone()
    y[..., 3:] = torch.randn(2, 8, 21, 3)
    assert torch.equal(model(x), model(y))
    assert _build("ddnet", 21, 8, 2, None, coords=3).coords == 2


def _fitted(model: nn.Module, x: torch.Tensor, steps: int = 30) -> nn.Module:
    """A few Adam steps on arbitrary labels: an untrained ddnet's logits barely depend on its input."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y = torch.arange(len(x)) % 5
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_symmetric_ddnet_does_not_depend_on_the_person_order():
    """Two persons in either slot give the same logits (training mode too, without dropout: BatchNorm
    sees both orders in one batch); without `symmetric` they differ; one person cannot be symmetric."""
    torch.manual_seed(0)
    x = torch.randn(8, 8, 30, 3)
    swapped = torch.cat([x[:, :, 15:], x[:, :, :15]], dim=2)
    model = _fitted(_build("ddnet", 30, 8, 3, None, persons=2, symmetric=True, dropout=0.0, **SMALL["ddnet"]), x)
    for train in (False, True):
        model.train(train)
        assert torch.allclose(model(x), model(swapped), atol=1e-5)
    plain = _fitted(_build("ddnet", 30, 8, 3, None, persons=2, dropout=0.0, **SMALL["ddnet"]), x).eval()
    assert not torch.allclose(plain(x), plain(swapped), atol=1e-2)
    assert model_dataset_fields("ddnet") == ("persons",)  # the trainer passes the dataset's count
    with pytest.raises(ValueError, match="person"):
        _build("ddnet", 21, 8, 3, None, persons=1, symmetric=True)


def test_stgcn_adjacency():
    a = adjacency(4, [(0, 1), (1, 2), (1, 2)])
    assert torch.equal(a[0], torch.eye(4))
    deg = torch.tensor([1.0, 2.0, 1.0, 0.0])
    assert a[1][0, 1] == pytest.approx(float(1 / (deg[0] * deg[1]).sqrt())) and a[1][3].abs().sum() == 0
    assert torch.equal(a[1], a[1].T)
    assert adjacency(3, None)[1].abs().sum() == 0  # generic data without edges: identity only
    with pytest.raises(ValueError, match=r"edge \(0, 5\) outside joints 0..2"):
        adjacency(3, [(0, 5)])


def test_adjacency_offset_is_not_pruned():
    """The learnable adjacency is kept dense by the default rule (like a bias); convs are pruned."""
    model = _build("stgcn", 21, 8, 3, [list(e) for e in HAND_EDGES], **SMALL["stgcn"])
    names = {t.name for t in create_pruner("mp", model, 0.9).targets}
    assert not any("adj_offset" in n for n in names) and "blocks.0.gcn.0.weight" in names
    assert "classifier.weight" not in names


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pmp_exact_rate_on_conv_weights(name, scope):
    """PMP's finalised masks prune exactly round(r * N) weights of the Conv1d/Conv2d tensors
    (per tensor, or over all of them)."""
    torch.manual_seed(0)
    model = _build(name, 21, 8, 3, [list(e) for e in HAND_EDGES], **SMALL[name])
    rate = 0.93
    pruner = create_pruner("pmp", model, rate, scope=scope)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = torch.randn(6, 8, 21, 3)
    for i in range(3):
        loss = model(x).square().mean() + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step((i + 1) / 3)
    masks = pruner.finalize()
    convs = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))}
    assert {n.rsplit(".", 1)[0] for n in masks} >= convs
    for n, m in masks.items():
        assert torch.equal(model.get_parameter(n) == 0, ~m), n
        if scope == "layer":
            assert int((~m).sum()) == round(rate * m.numel()), n
    if scope == "global":
        total = sum(m.numel() for m in masks.values())
        assert sum(int((~m).sum()) for m in masks.values()) == round(rate * total)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_method_trains_each_backbone(tmp_path, name):
    """Every registered pruning method, unchanged, through the trainer on each backbone (synthetic
    hands; stgcn gets the dataset's edges filled in); exact budgets."""
    for method in sorted(set(METHODS) - {"dense"}):
        cfg = apply_overrides(ExperimentConfig(), {
            "data.name": "synthetic", "data.options": {"seed": 0, "num_sequences": 60}, "preprocess.frames": 8,
            "model.name": name, "model.kwargs": SMALL[name], "train.epochs": 1, "train.batch_size": 32,
            "train.threads": 1, "pruning.method": method, "pruning.rate": 0.9,
            **({"pruning.options": OPTIONS[method]} if method in OPTIONS else {}),
        })
        metrics = run_experiment(cfg, tmp_path / method)
        assert metrics["exact_count"] and abs(metrics["achieved_rate"] - 0.9) < 0.02, method
    spec = json.loads((tmp_path / "pmp" / "model.json").read_text())
    assert ("edges" in spec["kwargs"]) == (name == "stgcn")


# ---------------------------------------------------------------- the generic sparse runtime


def _exported(tmp_path, name: str, kwargs: dict, rate: float, seed: int = 0, exclude_last: bool = True):
    torch.manual_seed(seed)
    model = with_random_batchnorm(create_model(name, **kwargs)).eval()
    masks = magnitude_prune(model, rate, exclude_last=exclude_last)
    path = save_compact(model, {"model": name, "kwargs": kwargs}, masks, tmp_path / f"{name}.pmp")
    return model, path


def _gap(model: nn.Module, module: nn.Module, batch: int, seed: int) -> float:
    x = torch.randn(batch, *module.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
        return float((ref - module(x)).abs().max() / max(1.0, float(ref.abs().max())))


@settings(max_examples=6, deadline=None)
@given(nodes=st.integers(1, 35), frames=st.integers(1, 40), chans=st.integers(1, 4), filters=st.integers(1, 12),
       hidden=st.integers(1, 20), batch=st.sampled_from([1, 2, 17, 33]), rate=st.sampled_from([0.5, 0.9, 0.98]),
       seed=st.integers(0, 9), symmetric=st.booleans())
def test_generic_runtime_matches_ddnet(tmp_path_factory, nodes, frames, chans, filters, hidden, batch, rate, seed,
                                       symmetric):
    kwargs = dict(num_nodes=nodes, in_frames=frames, in_channels=chans, num_classes=4, filters=filters, hidden=hidden)
    if symmetric:  # two persons of nodes // 2 joints each
        kwargs.update(num_nodes=2 * max(1, nodes // 2), persons=2, symmetric=True)
    model, path = _exported(tmp_path_factory.mktemp("dd"), "ddnet", kwargs, rate, seed)
    module = load_sparse(path)
    assert isinstance(module, SparseGeneric) and module.sparse_layers
    assert isinstance(module.model.distances, CompiledJointDistances)  # the distances run compiled too
    assert _gap(model, module, batch, seed) < 1e-5


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 5), frames=st.integers(1, 9), nodes=st.integers(1, 31), coords=st.integers(1, 3),
       extra=st.integers(0, 3), seed=st.integers(0, 99))
def test_compiled_joint_distances_match_the_layer(batch, frames, nodes, coords, extra, seed):
    """The runtime's kernel gives the training layer's values (to float32 rounding) for any sizes,
    on a strided view (the first `coords` channels of a wider input, as ddnet passes it); the
    layer itself: symmetric pairs only, zero on coincident joints, one joint a single zero."""
    x = torch.randn(batch, frames, nodes, coords + extra, generator=torch.Generator().manual_seed(seed))
    x[:, :, -1] = x[:, :, 0]  # a coincident pair (nodes > 1)
    layer = JointDistances(nodes)
    p = x[..., :coords]
    with torch.inference_mode():
        ref = layer(p)
        got = CompiledJointDistances(layer)(p)
    assert ref.shape == got.shape == (batch, max(nodes * (nodes - 1) // 2, 1), frames)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    if nodes > 1:
        k = nodes - 2  # the pair (0, nodes - 1) is the (nodes - 1)-th of row 0
        assert float(ref[:, k].abs().max()) == 0.0
        first, second = layer.joint_pairs()
        c = 1 % len(first)
        torch.testing.assert_close(ref[:, c], (p[:, :, int(first[c])] - p[:, :, int(second[c])]).norm(dim=-1))
    else:
        assert float(ref.abs().max()) == 0.0


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["hand", "pair", "graph", "none"]), nodes=st.integers(1, 30), frames=st.integers(1, 40),
       chans=st.integers(1, 4), widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
       strides=st.lists(st.sampled_from([1, 2]), min_size=3, max_size=3), kernel=st.sampled_from([1, 3, 5, 9]),
       batch=st.sampled_from([1, 2, 17, 33]), rate=st.sampled_from([0.5, 0.9, 0.98]), seed=st.integers(0, 9))
def test_generic_runtime_matches_stgcn(tmp_path_factory, kind, nodes, frames, chans, widths, strides, kernel, batch,
                                       rate, seed):
    nodes, edges = _layout(kind, nodes, seed)
    kwargs = dict(num_nodes=nodes, in_frames=frames, in_channels=chans, num_classes=4, edges=edges, channels=widths,
                  strides=strides[: len(widths)], kernel=kernel)
    model, path = _exported(tmp_path_factory.mktemp("st"), "stgcn", kwargs, rate, seed)
    assert _gap(model, load_sparse(path), batch, seed) < 1e-5


@pytest.mark.parametrize("name", BACKBONES)
def test_pruned_classifier_and_default_sizes(tmp_path, name):
    """Deployment sizes (FPHA hands), classifier pruned too (a sparse Linear at the end)."""
    kwargs = dict(num_nodes=21, in_frames=32, in_channels=3, num_classes=45)
    if name == "stgcn":
        kwargs["edges"] = [list(e) for e in HAND_EDGES]
    model, path = _exported(tmp_path, name, kwargs, 0.98, exclude_last=False)
    module = load_sparse(path)
    assert "classifier" in module.sparse_layers and not list(module.parameters()) and not module.training
    for batch in (1, 64):
        assert _gap(model, module, batch, batch) < 1e-5


def test_load_sparse_keeps_the_hand_tuned_agcn_runtime(tmp_path):
    kwargs = dict(num_nodes=9, in_frames=5, in_channels=3, num_classes=4, heads=2, attn_dim=4, gc_dim=3, hidden=10)
    model, path = _exported(tmp_path, "agcn", kwargs, 0.9)
    assert isinstance(load_sparse(path), SparseAttentionGCN)
    generic = load_sparse(path, generic=True)
    assert isinstance(generic, SparseGeneric) and _gap(model, generic, 3, 0) < 1e-5


@settings(max_examples=5, deadline=None)
@given(blocks=st.integers(2, 3), nodes=st.integers(1, 12), frames=st.integers(1, 6), heads=st.integers(1, 3),
       batch=st.sampled_from([1, 2, 17]), rate=st.sampled_from([0.5, 0.9, 0.98]), seed=st.integers(0, 9))
def test_deeper_agcn_deploys_on_the_generic_runtime(tmp_path_factory, blocks, nodes, frames, heads, batch, rate, seed):
    """blocks > 1: the hand-tuned kernels cover one block, so load_sparse falls back to the generic
    runtime, which matches the masked dense model."""
    kwargs = dict(num_nodes=nodes, in_frames=frames, in_channels=3, num_classes=4, heads=heads, attn_dim=4,
                  gc_dim=3, hidden=10, blocks=blocks)
    model, path = _exported(tmp_path_factory.mktemp("ag"), "agcn", kwargs, rate, seed)
    module = load_sparse(path)
    assert isinstance(module, SparseGeneric) and "deeper.0.query" in module.sparse_layers
    assert _gap(model, module, batch, seed) < 1e-5


@settings(max_examples=6, deadline=None)
@given(temporal=st.sampled_from([1, 3, 5]), blocks=st.integers(1, 2), nodes=st.integers(1, 12), frames=st.integers(1, 7),
       heads=st.integers(1, 3), batch=st.sampled_from([1, 2, 17]), rate=st.sampled_from([0.5, 0.9, 0.98]),
       seed=st.integers(0, 9))
def test_temporal_agcn_deploys_on_the_generic_runtime(tmp_path_factory, temporal, blocks, nodes, frames, heads, batch,
                                                       rate, seed):
    """`temporal`: the hand-tuned kernels flatten trajectories, so load_sparse takes the generic
    runtime, whose pruned grouped temporal convolution matches the masked dense model."""
    kwargs = dict(num_nodes=nodes, in_frames=frames, in_channels=3, num_classes=4, heads=heads, attn_dim=4,
                  gc_dim=3, hidden=10, blocks=blocks, temporal=temporal)
    model, path = _exported(tmp_path_factory.mktemp("agt"), "agcn", kwargs, rate, seed)
    module = load_sparse(path)
    assert isinstance(module, SparseGeneric) and "tconv" in module.sparse_layers
    assert _gap(model, module, batch, seed) < 1e-5


def test_temporal_agcn_shares_weights_over_time():
    """With time as an axis, no weight depends on the number of chunks: one model takes sequences of
    any length, a time step's node signal is C values, and each (node, head) has its own temporal
    filters (groups of gc_dim channels). Even kernels (no centred padding) and negatives are refused."""
    kw = dict(num_nodes=5, in_frames=4, in_channels=3, num_classes=4, heads=2, attn_dim=4, gc_dim=3, hidden=10)
    model = create_model("agcn", **kw, temporal=3).eval()
    assert model.query.weight.shape == (2 * 4, 3) and model.data_bn.num_features == 5 * 3
    assert model.tconv.weight.shape == (5 * 2 * 3, 3, 3) and model.tconv.groups == 5 * 2
    assert [model(torch.randn(2, t, 5, 3)).shape for t in (1, 4, 9)] == [(2, 4)] * 3
    flat = create_model("agcn", **kw)
    assert flat.query.weight.shape == (2 * 4, 4 * 3) and not hasattr(flat, "tconv")
    for bad in (-1, 2):
        with pytest.raises(ValueError, match="temporal must be 0"):
            create_model("agcn", **kw, temporal=bad)


def test_agcn_blocks_add_residual_attention_blocks():
    """One block is the network as it was (same parameters, in the same order, so a seed gives the
    same initial weights); each further block adds one block of heads * gc_dim inputs per node."""
    kw = dict(num_nodes=5, in_frames=4, in_channels=3, num_classes=4, heads=2, attn_dim=4, gc_dim=3, hidden=10)
    torch.manual_seed(0)
    one = create_model("agcn", **kw)
    torch.manual_seed(0)
    two = create_model("agcn", **kw, blocks=2)
    names = [n for n, _ in one.named_parameters()]
    assert names == ["data_bn.weight", "data_bn.bias", "query.weight", "query.bias", "key.weight", "key.bias",
                     "gc.weight", "gc.bias", "gc_bn.weight", "gc_bn.bias", "fc.weight", "fc.bias",
                     "classifier.weight", "classifier.bias"]
    extra = {n: p.shape for n, p in two.named_parameters() if n not in names}
    assert extra["deeper.0.query.weight"] == (2 * 4, 2 * 3) and extra["deeper.0.gc_bn.weight"] == (5 * 2 * 3,)
    assert torch.equal(one.query.weight, two.query.weight)
    assert two(torch.randn(3, 4, 5, 3)).shape == (3, 4)
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        create_model("agcn", **kw, blocks=0)


def test_generic_leaves_the_global_rng_alone(tmp_path):
    _, path = _exported(tmp_path, "ddnet", dict(num_nodes=5, in_frames=4, in_channels=3, num_classes=3), 0.9)
    state = torch.get_rng_state()
    load_sparse(path)
    assert torch.equal(state, torch.get_rng_state())


def test_generic_rejects_wrong_input_shapes(tmp_path):
    _, path = _exported(tmp_path, "ddnet", dict(num_nodes=5, in_frames=4, in_channels=3, num_classes=3), 0.9)
    with pytest.raises(ValueError, match=r"expected input \(B>=1, 4, 5, 3\)"):
        load_sparse(path)(torch.zeros(2, 4, 6, 3))


@settings(max_examples=25, deadline=None)
@given(two_d=st.booleans(), c_in=st.integers(1, 6), c_out=st.integers(1, 6), groups=st.sampled_from([1, 2]),
       kh=st.integers(1, 5), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 2), ph=st.integers(0, 2),
       pw=st.integers(0, 1), dh=st.integers(1, 2), h=st.integers(1, 40), w=st.integers(1, 9), bias=st.booleans(),
       batch=st.sampled_from([1, 3, 40]), rate=st.sampled_from([0.0, 0.6, 0.95]), seed=st.integers(0, 99),
       empty=st.integers(0, 3))
def test_sparse_conv_matches_torch_conv(two_d, c_in, c_out, groups, kh, kw, sh, sw, ph, pw, dh, h, w, bias, batch,
                                        rate, seed, empty):
    """Every conv mode the runtime has: one contiguous row (stride 1, kernel width 1), strided rows,
    strided columns (scalar), padding, dilation, groups, Conv1d; the chunk that would read past the
    input's end; output channels with no kept weight at all (`empty` of them: their constant path)."""
    from pmp.export.format import SparseTensor

    c_in, c_out = c_in * groups, c_out * groups
    torch.manual_seed(seed)
    if two_d:
        conv = nn.Conv2d(c_in, c_out, (kh, kw), (sh, sw), (ph, pw), (dh, 1), groups, bias)
        x = torch.randn(batch, c_in, h + kh * dh, w + kw)
    else:
        conv = nn.Conv1d(c_in, c_out, kh, sh, ph, dh, groups, bias)
        x = torch.randn(batch, c_in, h + kh * dh)
    with torch.no_grad():
        wt = conv.weight
        wt[wt.abs() < wt.abs().flatten().quantile(rate)] = 0
        wt[:empty] = 0
        if bias:
            conv.bias[:empty] = torch.linspace(-1, 1, len(conv.bias[:empty]))  # act(bias) there, either sign
        ref = conv(x)
    kept = SparseTensor.from_dense(conv.weight.detach().numpy())
    sparse = SparseConv(conv, kept, conv.bias.detach().numpy() if bias else None)
    with torch.inference_mode():
        assert torch.allclose(sparse(x), ref, atol=1e-5, rtol=1e-5)


def test_cli_train_export_predict_stgcn(tmp_path, capsys):
    """`pmp train/export/predict` on a non-agcn backbone: the sparse runtime gives the run's accuracy."""
    run = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--epochs", "2", "--preprocess.frames", "8", "--train.threads",
                 "1", "--model", "stgcn", "--set", "model.kwargs={channels: [4, 8], strides: [1, 2], kernel: 3}",
                 "--method", "mp", "--rate", "0.9", "--run-dir", str(run), "-q"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert main(["export", str(run), "-o", str(tmp_path / "m.pmp")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.pmp")]) == 0
    assert f"{100 * metrics['class_avg_acc']:.2f}%" in capsys.readouterr().out


def test_backbone_ablation_variants_are_real_changes_of_the_defaults():
    """Every variant of benchmarks/backbone_ablation.py is a valid override of its dataset's config
    and changes it (a mistyped key would raise, a no-op would measure the default twice); the
    schedule and depth variants are there."""
    from test_paired import load_benchmark  # tests/ is on sys.path under pytest

    abl = load_benchmark("backbone_ablation")
    for name, path in abl.CONFIGS.items():
        base = load_config(path)
        found = abl.variants(name)
        assert found["default"] == {}
        for variant, overrides in found.items():
            if variant != "default":
                assert apply_overrides(base, overrides).to_dict() != base.to_dict(), (name, variant)
        twice = f"train.epochs={2 * base.train.epochs}"
        assert found[twice] == {"train.epochs": 2 * base.train.epochs}
        assert found["model.blocks=3"] == {"model.kwargs.blocks": 3}
    # another backbone's config (--config): its own feature and schedule variants, no agcn kwargs
    other = Path(abl.ROOT) / "configs/sbu_stgcn.yaml"
    found = abl.variants("sbu", other)
    assert found["+ distance"] == {"preprocess.features": ["position", "distance"]}
    assert not any(v.startswith("model.") for v in found)
    for variant, overrides in found.items():
        if variant != "default":
            assert apply_overrides(load_config(other), overrides).to_dict() != load_config(other).to_dict(), variant

