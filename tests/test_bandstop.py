"""Band-stop parametrization: value, gradient through both factors, and the hard-mask limit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from pmp.pruning.bandstop import BandStop, band_stop_gate


def _effective(w: torch.Tensor, edge: float, sharpness: float) -> torch.Tensor:
    band = BandStop(w, edge, sharpness)
    return band(w)


@settings(max_examples=40, deadline=None)
@given(edge=st.floats(0.0, 1.0), sharpness=st.floats(0.1, 30.0), seed=st.integers(0, 2**16))
def test_gradient_is_the_analytic_derivative_of_w_psi(edge: float, sharpness: float, seed: int) -> None:
    """d/dw [w psi(w)] = psi + s |w| psi (1 - psi): both factors contribute."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(200, generator=g, dtype=torch.float64)).requires_grad_()
    upstream = torch.randn(200, generator=g, dtype=torch.float64)
    _effective(w, edge, sharpness).backward(upstream)
    psi = torch.sigmoid(sharpness * (w.detach().abs() - edge))
    analytic = psi + sharpness * w.detach().abs() * psi * (1 - psi)
    torch.testing.assert_close(w.grad, upstream * analytic)
    # and plain autograd through w * sigmoid(s(|w| - a)) agrees
    w2 = w.detach().clone().requires_grad_()
    (w2 * torch.sigmoid(sharpness * (w2.abs() - edge))).backward(upstream)
    torch.testing.assert_close(w.grad, w2.grad)


def test_gradcheck_against_finite_differences() -> None:
    w = (torch.randn(30, dtype=torch.float64) * 0.5).requires_grad_()
    band = BandStop(w, 0.3, 8.0)
    assert torch.autograd.gradcheck(band, (w,))


def test_gate_value_and_psi_half_at_the_edge() -> None:
    w = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    psi = band_stop_gate(w, 0.5, 3.0)
    assert psi[1] == pytest.approx(0.5) and psi[3] == pytest.approx(0.5)
    assert torch.equal(psi, psi.flip(0))  # symmetric in w
    torch.testing.assert_close(_effective(w, 0.5, 3.0), w * psi)


def test_psi_tends_to_the_hard_mask_as_sharpness_grows() -> None:
    w = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    edge = 0.8
    hard = (w.abs() > edge).float()
    away = (w.abs() - edge).abs() > 1e-3
    errors = [float((band_stop_gate(w, edge, s) - hard)[away].abs().max()) for s in (1.0, 10.0, 1e2, 1e4, 1e6)]
    assert all(b <= a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-6
    # huge logits are clamped, not NaN, and still exact 0/1 in float32
    psi = band_stop_gate(torch.tensor([0.0, 5.0]), 1.0, 1e30)
    assert torch.isfinite(psi).all() and psi[1] == 1.0 and psi[0] < 1e-12


def test_as_a_parametrization_with_buffers_in_the_state_dict() -> None:
    lin = nn.Linear(6, 4)
    band = BandStop(lin.weight, 0.1, 50.0)
    parametrize.register_parametrization(lin, "weight", band)
    latent = lin.parametrizations.weight.original
    torch.testing.assert_close(lin.weight, latent * band_stop_gate(latent, 0.1, 50.0))
    band.set(0.2, 5.0)
    state = lin.state_dict()
    assert float(state["parametrizations.weight.0.edge"]) == pytest.approx(0.2)
    assert float(state["parametrizations.weight.0.sharpness"]) == pytest.approx(5.0)
    lin(torch.randn(3, 6)).sum().backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


@settings(max_examples=60, deadline=None)
@given(edge=st.floats(0.0, 2.0), sharpness=st.floats(0.01, 1e7), scale=st.floats(1e-3, 10.0), seed=st.integers(0, 2**16))
def test_float32_compiled_pass_matches_the_sigmoid_reference(edge: float, sharpness: float, scale: float, seed: int) -> None:
    """float32 CPU tensors take the compiled pass (rational tanh); it must agree with the float64
    torch expression: psi to 3e-7, the output w psi accordingly, the derivative to a few float32 ulps relative
    to its scale 1 + s |w| / 4, and exactly 0/1 where the sigmoid has saturated in float32."""
    g = torch.Generator().manual_seed(seed)
    w32 = (torch.randn(3000, generator=g) * scale).requires_grad_()
    upstream = torch.randn(3000, generator=g)
    _effective(w32, edge, sharpness).backward(upstream)
    w = w32.detach().double()
    s32, a32 = float(torch.tensor(sharpness, dtype=torch.float32)), float(torch.tensor(edge, dtype=torch.float32))
    logit = s32 * (w.abs() - a32)
    psi_ref = torch.sigmoid(logit)
    psi = band_stop_gate(w32.detach(), edge, sharpness).double()
    assert (psi - psi_ref).abs().max() < 3e-7
    saturated = logit.abs() > 17.0  # sigmoid within float32 rounding of 0 or 1
    assert torch.equal(psi[saturated], (logit[saturated] > 0).double())
    deriv_ref = psi_ref + s32 * w.abs() * psi_ref * (1 - psi_ref)
    deriv = w32.grad.double() / upstream.double()
    ok = upstream.abs() > 1e-3
    assert ((deriv - deriv_ref)[ok].abs() / (1 + s32 * w.abs()[ok] / 4)).max() < 6e-7  # + grad rounding


def test_non_contiguous_and_no_grad_inputs_take_the_same_path() -> None:
    w = torch.randn(40, 30)[:, ::3]  # a strided view
    assert not w.is_contiguous()
    band = BandStop(w, 0.5, 20.0)
    with torch.no_grad():
        out = band(w)
    torch.testing.assert_close(out, w * band_stop_gate(w.contiguous(), 0.5, 20.0))
    assert out.shape == w.shape
