"""Priors: closed-form quantiles, band edges a(r) checked by sampling, and the scale rule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.pruning.priors import PRIORS, Gaussian, Laplace, Uniform, make_prior, matched_prior, standard_prior

NAMES = sorted(PRIORS)
GEN = torch.Generator().manual_seed(0)
SAMPLES = {name: make_prior(name, 0.7).sample((200_000,), GEN).double() for name in NAMES}


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NAMES), rate=st.floats(0.0, 0.999))
def test_band_edge_is_the_rate_quantile_of_samples(name: str, rate: float) -> None:
    a = make_prior(name, 0.7).band_edge(rate)
    frac = float((SAMPLES[name].abs() < a).double().mean())
    n = SAMPLES[name].numel()
    assert abs(frac - rate) < 5 * math.sqrt(rate * (1 - rate) / n) + 2e-4


@pytest.mark.parametrize(
    "prior, closed_form",
    [
        (Gaussian(0.3), lambda r: 0.3 * math.sqrt(2) * float(torch.erfinv(torch.tensor(r, dtype=torch.float64)))),
        (Laplace(0.3), lambda r: -0.3 * math.log(1 - r)),
        (Uniform(0.3), lambda r: 0.3 * r),
    ],
)
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 0.98, 0.99])
def test_band_edge_closed_forms(prior, closed_form, rate: float) -> None:
    assert prior.band_edge(rate) == pytest.approx(closed_form(rate), rel=1e-6, abs=1e-7)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), p=st.floats(1e-4, 1 - 1e-4), scale=st.floats(1e-3, 10.0))
def test_cdf_inverts_quantile(name: str, p: float, scale: float) -> None:
    q = make_prior(name, scale)
    assert float(q.cdf(q.quantile(p))) == pytest.approx(p, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_pdf_is_the_cdf_derivative_and_std_matches_samples(name: str) -> None:
    q = make_prior(name, 0.7)
    x = torch.linspace(-0.99 * q.quantile(0.999).item(), 0.99 * q.quantile(0.999).item(), 101, dtype=torch.float64)
    x = x[(x.abs() - q.scale).abs() > 1e-3]  # away from the uniform's jumps
    h = 1e-6
    numeric = (q.cdf(x + h) - q.cdf(x - h)) / (2 * h)
    torch.testing.assert_close(q.pdf(x), numeric, rtol=1e-4, atol=1e-6)
    assert float(SAMPLES[name].std()) == pytest.approx(q.std, rel=0.01)
    assert float(q.log_pdf(torch.tensor([0.0])).exp()) == pytest.approx(float(q.pdf(torch.tensor([0.0]))))


@pytest.mark.parametrize("name", NAMES)
def test_matched_prior_has_the_weights_rms_as_std(name: str) -> None:
    w = torch.randn(64, 32, generator=GEN) * 0.05
    q = matched_prior(name, w)
    assert q.std == pytest.approx(float(w.double().square().mean().sqrt()), rel=1e-9)
    pooled = matched_prior(name, [w, 3 * w])
    assert pooled.std == pytest.approx(float(torch.cat([w, 3 * w]).double().square().mean().sqrt()), rel=1e-9)
    assert standard_prior(name).std == pytest.approx(1.0)


def test_uniform_prior_matched_to_default_init_is_the_init() -> None:
    """PyTorch's default Linear init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the matched uniform
    prior recovers that bound to sampling accuracy."""
    lin = torch.nn.Linear(400, 300)
    assert matched_prior("uniform", lin.weight).scale == pytest.approx(1 / math.sqrt(400), rel=0.01)


def test_errors() -> None:
    with pytest.raises(KeyError):
        make_prior("cauchy", 1.0)
    with pytest.raises(ValueError):
        Gaussian(0.0)
    with pytest.raises(ValueError):
        matched_prior("gaussian", torch.zeros(3, 3))
