"""PMP: exact rates at finalisation, gradients, schedules, diagnostics, checkpoints, a toy run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from pmp.pruning import PMP, make_prior
from pmp.pruning.base import METHODS
from pmp.pruning.bandstop import band_stop_gate
from pmp.pruning.masks import kept_count
from pmp.pruning.pmp import exact_edge


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: a second intra-op thread only adds synchronisation, badly so on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed: int = 0, sizes: tuple[int, ...] = (8, 32, 32, 2)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(3, 8, 3)
            self.c2 = nn.Conv2d(8, 6, (1, 3), groups=2)
            self.head = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.c1(x)).unsqueeze(2)
            return self.head(torch.relu(self.c2(h)).mean((2, 3)))

    return Net()


def test_registered_and_the_few_line_api_on_convolutions() -> None:
    assert METHODS["pmp"] is PMP
    model = convnet()
    pruner = PMP(model, rate=0.9, prior="laplace")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = torch.randn(4, 3, 12)
    for i in range(3):
        loss = model(x).square().mean() + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step((i + 1) / 3)
    masks = pruner.finalize()
    assert set(masks) == {"c1.weight", "c2.weight"}  # the last layer is excluded by default
    for name, m in masks.items():
        assert int((~m).sum()) == round(0.9 * m.numel())
        assert torch.equal(model.get_parameter(name) == 0, ~m)
    json.dumps(pruner.describe())


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=3),
    rate=st.floats(0.0, 0.999),
    scope=st.sampled_from(["layer", "global"]),
    values=st.sampled_from([(-2.0, -1.0, 1.0, 2.0), (0.5,), None]),  # heavy ties, all tied, no ties
    seed=st.integers(0, 1000),
)
def test_finalize_prunes_exactly_round_rn(shapes, rate, scope, values, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(i, o, bias=False) for o, i in shapes])
    with torch.no_grad():
        for p in model.parameters():
            if values is None:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                v = torch.tensor(values)
                p.copy_(v[torch.randint(0, len(values), p.shape, generator=g)])
    pruner = PMP(model, rate=rate, scope=scope, exclude_last=False)
    pruner.step(1.0)
    masks = pruner.finalize()
    sizes = [m.numel() for m in masks.values()]
    pruned = [int((~m).sum()) for m in masks.values()]
    if scope == "layer":
        assert pruned == [n - kept_count(rate, n) for n in sizes]
    else:
        assert sum(pruned) == sum(sizes) - kept_count(rate, sum(sizes))
    for p, m in zip(model.parameters(), masks.values()):
        assert torch.equal(p != 0, m)  # kept weights are nonzero here, so zeros == pruned


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), rate=st.floats(0.0, 0.999), parts=st.integers(1, 3), seed=st.integers(0, 1000))
def test_exact_edge_separates_the_k_smallest(n: int, rate: float, parts: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, generator=g) for _ in range(parts)]
    mags = torch.cat(tensors).abs()
    a = exact_edge(tensors, rate)
    k = mags.numel() - kept_count(rate, mags.numel())
    assert int((mags < a).sum()) == k
    assert a == exact_edge(tensors, rate, np.empty(mags.numel(), dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 3000), rate=st.floats(0.001, 0.999), parts=st.integers(1, 3), seed=st.integers(0, 1000),
       shift=st.floats(-0.1, 0.1), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_bracketed_edge_is_the_full_selections_edge_to_the_bit(n, rate, parts, seed, shift, dtype) -> None:
    """Whatever the previous edge (inside the bracket, beside it, far off), the value is the one
    of the full selection: the bracket only saves time."""
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, generator=g, dtype=dtype) for _ in range(parts)]
    exact = exact_edge(tensors, rate)
    for near in (exact, exact * (1 + shift), exact * 3, exact / 3, 1e-30):
        assert exact_edge(tensors, rate, near=near) == exact
        assert exact_edge(tensors, rate, np.empty(parts * n, dtype=tensors[0].numpy().dtype), near=near) == exact


def test_bracket_pass_counts_copies_and_finds_the_next_one_above() -> None:
    from pmp.pruning._edge_kernel import bracket_pass

    w = np.array([-0.5, 0.1, 0.3, -0.25, 0.9, 0.29, -2.0], dtype=np.float32)
    out = np.zeros(2, dtype=np.float32)
    below, inside, above = bracket_pass(w, np.float32(0.2), np.float32(0.4), out, 0)
    assert (below, inside, above) == (1, 3, np.float32(0.5))  # 0.3, 0.25, 0.29 inside; only 2 fit
    assert sorted(out.tolist()) == sorted(np.float32([0.3, 0.25]).tolist())


@settings(max_examples=30, deadline=None)
@given(rate=st.floats(0.0, 0.99), ramp=st.floats(0.05, 0.95), progress=st.floats(0.0, 1.0))
def test_rate_ramp_is_monotone_and_reaches_the_rate(rate: float, ramp: float, progress: float) -> None:
    pruner = PMP(mlp(), rate=rate, ramp=ramp)
    assert pruner.rate_at(0.0) == 0.0 and pruner.rate_at(ramp) == rate and pruner.rate_at(1.0) == rate
    assert 0.0 <= pruner.rate_at(progress) <= rate
    assert pruner.rate_at(progress) <= pruner.rate_at(min(progress + 0.01, 1.0)) + 1e-12
    expected = rate * (1 - (1 - progress / ramp) ** 3) if progress < ramp else rate
    assert pruner.rate_at(progress) == pytest.approx(expected)


def test_band_follows_the_ramped_rate() -> None:
    """Mid-ramp, the band stops exactly the ramped fraction of every tensor."""
    model = mlp()
    pruner = PMP(model, rate=0.9, ramp=0.5)
    pruner.step(0.25)
    r_t = pruner.rate_at(0.25)
    for t in pruner.targets:
        w = pruner.latent(t.name).detach().abs()
        edge = pruner._bandstops[t.name].edge
        assert int((w < edge).sum()) == t.numel - kept_count(r_t, t.numel)


def test_soft_mask_prunes_what_finalize_prunes() -> None:
    """Empirical edge: psi < 1/2 exactly on the weights that finalize() removes (no ties)."""
    for scope in ("layer", "global"):
        model = mlp()
        pruner = PMP(model, rate=0.93, scope=scope, ramp=0.0)
        soft = {t.name: pruner.effective(t.name).detach().abs() < pruner.latent(t.name).detach().abs() / 2 for t in pruner.targets}
        masks = pruner.finalize()
        for name, m in masks.items():
            assert torch.equal(soft[name], ~m)


def test_gradient_reaches_the_latent_through_both_factors() -> None:
    """dL/dW^ = dL/dW * (psi + s |W^| psi (1 - psi)), W = W^ psi(W^) the weight the layer uses."""
    model = mlp()
    pruner = PMP(model, rate=0.5, s_start=3.0, s_end=3.0)
    x = torch.randn(16, 8)
    model(x).sum().backward()
    lin = model[0]
    latent = pruner.latent("0.weight").detach()
    band = lin.parametrizations.weight[0]
    psi = band_stop_gate(latent, band.edge, band.sharpness)
    w = (latent * psi).requires_grad_()  # the effective weight as a leaf: dL/dW
    model[2:](torch.relu(nn.functional.linear(x, w, lin.bias))).sum().backward()
    expected = w.grad * (psi + band.sharpness * latent.abs() * psi * (1 - psi))
    torch.testing.assert_close(lin.parametrizations.weight.original.grad, expected)


def test_sharpness_schedule_and_edge_rules() -> None:
    model = mlp()
    pruner = PMP(model, rate=0.8, s_start=2.0, s_end=200.0, edge="prior", ramp=0.0)
    band = model[0].parametrizations.weight[0]
    q = pruner.priors["0.weight"]
    assert float(band.sharpness) == pytest.approx(2.0 / q.std, rel=1e-6)
    assert float(band.edge) == pytest.approx(q.band_edge(0.8), rel=1e-6)
    pruner.step(0.5)
    assert float(band.sharpness) == pytest.approx(20.0 / q.std, rel=1e-6)  # geometric
    pruner.step(1.0)
    assert float(band.sharpness) == pytest.approx(200.0 / q.std, rel=1e-6)
    glob = PMP(mlp(), rate=0.8, scope="global")
    assert len({id(q) for q in glob.priors.values()}) == 1  # one prior, one edge for all targets


@pytest.mark.parametrize("alignment", ["wasserstein", "kl"])
def test_penalty_small_on_prior_weights_large_otherwise(alignment: str) -> None:
    model = mlp(sizes=(64, 128, 128, 2))
    q = make_prior("gaussian", 0.05)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.copy_(q.sample(layer.weight.shape, g))
    pruner = PMP(model, rate=0.9, prior="gaussian", prior_scale=0.05, alignment=alignment, lam=1.0)
    near = float(pruner.penalty().detach())
    mismatch = pruner.prior_mismatch()
    assert mismatch["overall"] == pytest.approx(0.9, abs=0.01)
    with torch.no_grad():
        for t in pruner.targets:
            pruner.latent(t.name).mul_(2.5)
    far = float(pruner.penalty().detach())
    assert near < 0.02 and far > 0.3
    assert pruner.prior_mismatch()["overall"] < 0.6


def test_diagnostics_report_a_crisp_mask_at_high_sharpness() -> None:
    model = mlp()
    pruner = PMP(model, rate=0.9, ramp=0.0)
    early = pruner.soft_to_hard()
    pruner.step(1.0)
    late = pruner.soft_to_hard()
    assert late["psi_in_band"] < 1e-3 < early["psi_in_band"]
    assert late["psi_out_band"] > 0.99
    assert late["relative_gap"] < early["relative_gap"]
    assert set(late["per_tensor"]) == {t.name for t in pruner.targets}
    for t in pruner.targets:  # sharper band-stop: fewer weights left in its transition
        e, lt = early["per_tensor"][t.name], late["per_tensor"][t.name]
        assert e["numel"] == lt["numel"] == pruner.latent(t.name).numel()
        assert lt["in_transition"] < e["in_transition"] <= e["numel"]
    json.dumps(late)


def _save(path, pruner: PMP, model: nn.Module) -> None:
    """Tensors into safetensors, everything else into JSON: no pickle anywhere."""
    state = {f"pruner.{k}": v for k, v in pruner.state_dict().items()}
    state.update({f"model.{k}": v for k, v in model.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items() if torch.is_tensor(v)}, str(path / "ckpt.safetensors"))
    (path / "ckpt.json").write_text(json.dumps({k: v for k, v in state.items() if not torch.is_tensor(v)}))


def _load(path) -> tuple[dict, dict]:
    state = {**load_file(str(path / "ckpt.safetensors")), **json.loads((path / "ckpt.json").read_text())}
    split = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    return split("pruner."), split("model.")


def _train(model: nn.Module, pruner: PMP, opt: torch.optim.Optimizer, batches, start: int, stop: int) -> list[float]:
    losses, total = [], len(batches)
    for i in range(start, stop):
        x, y = batches[i]
        loss = nn.functional.cross_entropy(model(x), y) + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step((i + 1) / total)
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("hard_tail, cut", [(0.0, 5), (0.3, 5), (0.3, 8)])
def test_checkpoint_resumes_exactly(tmp_path, hard_tail: float, cut: int) -> None:
    """Cut before the hard tail, or inside it (steps 8-10 of 10 run with fixed masks)."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(10)]
    model = mlp(0)
    pruner = PMP(model, rate=0.9, subsample=64, hard_tail=hard_tail)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    reference = _train(model, pruner, opt, batches, 0, 10)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    model = mlp(0)
    pruner = PMP(model, rate=0.9, subsample=64, hard_tail=hard_tail)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = _train(model, pruner, opt, batches, 0, cut)
    assert (pruner.masks is not None) == (cut >= 7 and hard_tail > 0)
    _save(tmp_path, pruner, model)
    opt_state = copy.deepcopy(opt.state_dict())

    fresh = mlp(1)  # different initialisation: everything must come from the checkpoint
    resumed = PMP(fresh, rate=0.9, subsample=64, hard_tail=hard_tail)
    pruner_state, model_state = _load(tmp_path)
    resumed.load_state_dict(pruner_state)
    fresh.load_state_dict(model_state)
    opt = torch.optim.Adam(fresh.parameters(), 1e-2)
    opt.load_state_dict(opt_state)
    second = _train(fresh, resumed, opt, batches, cut, 10)
    assert first + second == reference
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_toy_problem_exact_rate_and_hard_equals_soft(tmp_path) -> None:
    """A small MLP on a separable problem: exact rate, hard accuracy = soft accuracy, and the
    finalised weights survive a safetensors round trip bit for bit."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    model = mlp(0, (8, 64, 64, 2))
    pruner = PMP(model, rate=0.9)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    steps = 150
    for i in range(steps):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx]) + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step((i + 1) / steps)
    with torch.no_grad():
        soft = (model(x).argmax(1) == y).float().mean().item()
    masks = pruner.finalize()
    with torch.no_grad():
        hard = (model(x).argmax(1) == y).float().mean().item()
    assert soft > 0.9 and abs(hard - soft) <= 0.01
    for name, m in masks.items():
        assert int((~m).sum()) == round(0.9 * m.numel())
        assert int((model.get_parameter(name) == 0).sum()) == int((~m).sum())
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    restored = mlp(1, (8, 64, 64, 2))
    restored.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    for k, v in model.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v)
    assert pruner.penalty().item() == 0.0 and not pruner.step(1.0)


def test_hard_tail_trains_the_network_finalize_returns() -> None:
    """From progress 1 - hard_tail on: the masks are the exact top-k of that moment and stay fixed,
    pruned weights are exactly zero, the kept ones still train, the alignment is off, and the
    network evaluated before finalize() is the finalised one to the bit."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(10)]
    model = mlp(0)
    pruner = PMP(model, rate=0.8, hard_tail=0.3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    _train(model, pruner, opt, batches, 0, 6)
    assert pruner.masks is None and pruner.penalty().item() > 0
    latents = {t.name: pruner.latent(t.name).detach().clone() for t in pruner.targets}
    _train(model, pruner, opt, batches, 6, 7)  # progress 0.7: the tail starts after this step
    expected = pruner.compute_masks({k: pruner.latent(k).detach().abs() for k in latents})
    hardened = {k: m.clone() for k, m in pruner.masks.items()}
    assert all(torch.equal(hardened[k], expected[k]) for k in latents)
    assert pruner.penalty().item() == 0.0
    with pytest.raises(RuntimeError):
        pruner.soft_to_hard()
    _train(model, pruner, opt, batches, 7, 10)
    for name, mask in pruner.masks.items():
        assert torch.equal(mask, hardened[name])
        effective = pruner.effective(name)
        assert int((effective[~mask] != 0).sum()) == 0
        assert int((~mask).sum()) == round(0.8 * mask.numel())
        assert not torch.equal(pruner.latent(name)[mask], latents[name][mask])  # the survivors trained
    x = torch.randn(64, 8, generator=g)
    with torch.no_grad():
        before = model(x)
    masks = pruner.finalize()
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    assert all(torch.equal(masks[k], hardened[k]) for k in masks)
    assert pruner.describe()["hard_tail"] == 0.3


def test_invalid_options() -> None:
    with pytest.raises(ValueError):
        PMP(mlp(), rate=0.5, edge="median")
    with pytest.raises(KeyError):
        PMP(mlp(), rate=0.5, alignment="mmd")
    with pytest.raises(ValueError):
        PMP(mlp(), rate=0.5, s_start=10.0, s_end=1.0)
    with pytest.raises(ValueError):
        PMP(mlp(), rate=1.0)
    with pytest.raises(ValueError, match="hard_tail"):
        PMP(mlp(), rate=0.5, hard_tail=0.6)  # the tail would start before the ramp reaches the rate
