"""Alignment terms: ~0 on samples of the prior, large otherwise, batched, differentiable, cheap."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.pruning.alignment import ALIGNMENTS, make_alignment, sort_last, subsample
from pmp.pruning.priors import PRIORS, make_prior

GEN = torch.Generator().manual_seed(0)
CASES = [(a, p) for a in sorted(ALIGNMENTS) for p in sorted(PRIORS)]


@pytest.mark.parametrize("alignment, prior", CASES)
def test_near_zero_on_prior_samples_large_otherwise(alignment: str, prior: str) -> None:
    q = make_prior(prior, 0.05)
    align = make_alignment(alignment, q, 0.98)
    own = float(align(q.sample((4096,), GEN)))
    assert 0.0 <= own < 0.01
    others = {
        "twice as wide": q.sample((4096,), GEN) * 2,
        "half as wide": q.sample((4096,), GEN) / 2,
        "other shape": make_prior("uniform" if prior != "uniform" else "laplace", 1.0).from_std(q.std).sample((4096,), GEN),
    }
    for what, w in others.items():
        assert float(align(w)) > 3 * own + 0.02, what
    assert float(align(others["twice as wide"])) > 0.2


@pytest.mark.parametrize("alignment", sorted(ALIGNMENTS))
def test_scale_free_and_batched(alignment: str) -> None:
    """Weights / std scored against the unit prior equal weights scored against their own prior,
    and a (rows, m) batch gives each row's value (PMP scores all layers in one call)."""
    q = make_prior("gaussian", 0.02)
    w = q.sample((3, 1024), GEN) * torch.tensor([[1.0], [1.5], [0.7]])
    own = make_alignment(alignment, q, 0.9)
    unit = make_alignment(alignment, make_prior("gaussian", 1.0), 0.9)
    rows = torch.stack([own(r) for r in w])
    torch.testing.assert_close(own(w), rows)
    torch.testing.assert_close(unit(w / q.std), rows, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("alignment", sorted(ALIGNMENTS))
def test_gradient_descent_moves_samples_towards_the_prior(alignment: str) -> None:
    q = make_prior("laplace", 1.0)
    align = make_alignment(alignment, q, 0.95)
    w = (make_prior("gaussian", 2.0).sample((1024,), GEN)).requires_grad_()
    start = float(align(w).detach())
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        align(w).backward()
        opt.step()
    assert float(align(w).detach()) < 0.1 * start


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4), size=st.integers(1, 500))
def test_subsample_draws_from_the_pooled_tensors(sizes: list[int], size: int) -> None:
    tensors = [torch.arange(n, dtype=torch.float64) + 1000 * i for i, n in enumerate(sizes)]
    out = subsample(tensors, size, GEN)
    pool = torch.cat(tensors)
    if pool.numel() <= size:
        assert torch.equal(out, pool)  # small groups: every weight, exactly once
    else:
        assert out.numel() == size and torch.isin(out, pool).all()


def test_subsample_is_uniform_over_the_pool_and_differentiable() -> None:
    a, b = torch.zeros(1000, requires_grad=True), torch.ones(3000, requires_grad=True)
    out = subsample([a, b], 3000, GEN)
    assert float(out.detach().mean()) == pytest.approx(0.75, abs=0.04)  # b holds 3/4 of the pool
    out.sum().backward()
    assert float(a.grad.sum() + b.grad.sum()) == 3000


def test_sort_last_matches_torch_sort_and_passes_gradients() -> None:
    x = torch.randn(3, 257, generator=GEN, requires_grad=True)
    s = sort_last(x)
    torch.testing.assert_close(s, torch.sort(x, dim=-1).values)
    (s * torch.arange(257.0)).sum().backward()
    ranks = torch.argsort(torch.argsort(x.detach(), dim=-1), dim=-1).float()
    torch.testing.assert_close(x.grad, ranks)


def test_unknown_alignment() -> None:
    with pytest.raises(KeyError):
        make_alignment("mmd", make_prior("gaussian", 1.0), 0.5)
