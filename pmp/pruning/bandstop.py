"""The band-stop parametrization W = W^ * psi(W^), psi(w) = sigmoid(s (|w| - a)).

psi stops the band |w| < a (the weights to prune) and passes the rest; as the sharpness s grows
psi tends to the hard mask 1[|w| > a], so the trained soft network becomes the pruned one. The
gradient reaches W^ through both factors: d/dw [w psi(w)] = psi + s |w| psi (1 - psi). The second
term lets a weight near the edge cross it in either direction, which is how topology is learned.

psi = sigmoid(s(|w| - a)) is the one-sigmoid form of the symmetrised sigmoid(s(w - a)) +
sigmoid(-s(w + a)); they differ by less than sigmoid(-s a) and the one-sigmoid form is half the work.
"""

from __future__ import annotations

import torch
from torch import nn


#: sigmoid(+-30) is 1 and 1e-13 in float32; clamping first avoids exp's slow path on huge
#: arguments (s (|w| - a) reaches 1e4 late in training), which made the gate 1.6x slower.
_LOGIT_CLAMP = 30.0


def band_stop_gate(w: torch.Tensor, edge: torch.Tensor | float, sharpness: torch.Tensor | float) -> torch.Tensor:
    """psi(w) = sigmoid(s (|w| - a)), in [0, 1]; 1/2 exactly at |w| = a."""
    return torch.abs(w).sub_(edge).mul_(sharpness).clamp_(-_LOGIT_CLAMP, _LOGIT_CLAMP).sigmoid_()


class _BandStopFn(torch.autograd.Function):
    """w * psi(w) with a hand-written backward: it keeps psi (one tensor) for backward instead of
    autograd's four intermediates, and runs the backward in place in one scratch tensor."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, edge: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
        psi = band_stop_gate(w, edge, sharpness)
        ctx.save_for_backward(w, psi, sharpness)
        return w * psi

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        w, psi, s = ctx.saved_tensors
        # psi (1 - psi) >= 0, so |w psi (1 - psi)| = |w| psi (1 - psi)
        d = torch.addcmul(psi, psi, psi, value=-1.0).mul_(w).abs_().mul_(s).add_(psi).mul_(grad)
        return d, None, None


class BandStop(nn.Module):
    """Parametrization for `torch.nn.utils.parametrize`; the pruner writes the edge a and the
    sharpness s (buffers, so they travel with the model's state_dict)."""

    def __init__(self, like: torch.Tensor, edge: float = 0.0, sharpness: float = 1.0):
        super().__init__()
        self.register_buffer("edge", torch.tensor(edge, dtype=like.dtype, device=like.device))
        self.register_buffer("sharpness", torch.tensor(sharpness, dtype=like.dtype, device=like.device))

    def set(self, edge: float, sharpness: float) -> None:
        self.edge.fill_(edge)
        self.sharpness.fill_(sharpness)

    def gate(self, w: torch.Tensor) -> torch.Tensor:
        return band_stop_gate(w, self.edge, self.sharpness)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _BandStopFn.apply(w, self.edge, self.sharpness)
