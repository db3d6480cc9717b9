"""Differentiable distances between the latent weights' distribution P and the prior Q.

Both terms see a random subsample of each group's weights (`subsample`): sorting or binning a
million weights every step made training 5.6x slower than dense in the prototype, while 4,096 draws
estimate a distribution to about 1/sqrt(4096) = 1.6% and cost well under a millisecond. Each term is
scale-free (0 when P = Q up to sampling noise, order 1 when P is a differently scaled Q), so one
lambda suits every layer, and samples divided by std(Q) can be scored against the unit-std prior:
PMP scores all its layers in one batched call, `w` of shape (layers, samples).

- `KLAlignment`: KL(P || Q) over fixed bins (equal-mass under Q, plus the band edges +-a(r), so the
  mass inside the band is one of the matched quantities). P is a soft histogram: a weight counts as
  below an edge e with weight sigmoid((e - w) / h), h = bandwidth * std(Q).
- `WassersteinAlignment`: the squared 1-D Wasserstein-2 distance between the magnitudes: sorted
  subsample against the quantiles of |Q| at the plotting positions (i + 1/2) / m, over var(Q).
  Every sampled weight gets a pull towards its own target quantile, wherever it sits.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
import torch

from .priors import Prior


def subsample(tensors: Sequence[torch.Tensor], size: int, generator: torch.Generator | None) -> torch.Tensor:
    """`size` entries drawn uniformly with replacement from the pooled tensors (all of them, in
    order, when there are no more than `size`). Differentiable with respect to the tensors."""
    flats = [t.reshape(-1) for t in tensors]
    n = sum(f.numel() for f in flats)
    if n <= size:
        return torch.cat(flats) if len(flats) > 1 else flats[0]
    device = flats[0].device
    idx = torch.randint(0, n, (size,), generator=generator, device=device)
    if len(flats) == 1:
        return flats[0].index_select(0, idx)
    starts = torch.tensor([0] + [f.numel() for f in flats], device=device).cumsum(0)
    owner = torch.bucketize(idx, starts[1:], right=True)
    return torch.cat([f.index_select(0, idx[owner == i] - starts[i]) for i, f in enumerate(flats)])


def sort_last(x: torch.Tensor) -> torch.Tensor:
    """Differentiable ascending sort along the last dimension. On CPU the permutation comes from
    numpy: torch.sort takes 1.3 ms on a (4, 4096) batch of samples, numpy 0.3 ms."""
    if x.device.type != "cpu":
        return torch.sort(x, dim=-1).values
    return x.gather(-1, torch.from_numpy(np.argsort(x.detach().numpy(), axis=-1)))


class Alignment:
    """D(P || Q) between sampled weights and the prior: `w` (..., m) -> (...), one value per row."""

    name: ClassVar[str]

    def __init__(self, prior: Prior, rate: float | Sequence[float]):
        self.prior, self.rate = prior, rate

    @property
    def rates(self) -> list[float]:
        """The band rate(s) as a list: one for PMP, every training rate for multi-rate pruning."""
        return [float(self.rate)] if isinstance(self.rate, (int, float)) else [float(r) for r in self.rate]

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class KLAlignment(Alignment):
    name = "kl"

    def __init__(self, prior: Prior, rate: float | Sequence[float], bins: int = 32, bandwidth: float = 0.05):
        super().__init__(prior, rate)
        probs = {j / bins for j in range(1, bins)}
        for r in self.rates:
            if 0.0 < r < 1.0:
                probs |= {(1.0 - r) / 2.0, (1.0 + r) / 2.0}
        cdf = torch.tensor(sorted(probs), dtype=torch.float64)
        self.edges = prior.quantile(cdf)  # (K-1,) finite: every bin has positive mass under Q
        self.q_mass = torch.diff(cdf, prepend=cdf.new_zeros(1), append=cdf.new_ones(1))
        self.width = bandwidth * prior.std

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        edges = self.edges.to(w.device, w.dtype)
        below = torch.sigmoid((edges - w.unsqueeze(-1)) / self.width).mean(-2)  # soft P(w < e), (..., K-1)
        ends = below.new_zeros(below.shape[:-1] + (1,))
        p = torch.diff(below, prepend=ends, append=ends + 1.0).clamp_min(1e-12)
        q = self.q_mass.to(w.device, w.dtype)
        return (p * (p / q).log()).sum(-1)


class WassersteinAlignment(Alignment):
    name = "wasserstein"

    def __init__(self, prior: Prior, rate: float | Sequence[float]):
        super().__init__(prior, rate)
        self._targets: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    def targets(self, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Quantiles of |Q| at (i + 1/2) / m, cached (the sample size is fixed per layer)."""
        key = (m, dtype, device)
        if key not in self._targets:
            pos = (torch.arange(m, dtype=torch.float64) + 0.5) / m
            self._targets[key] = self.prior.magnitude_quantile(pos).to(device, dtype)
        return self._targets[key]

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        mags = sort_last(w.abs())
        t = self.targets(mags.shape[-1], w.dtype, w.device)
        return (mags - t).square().mean(-1) / self.prior.std**2


ALIGNMENTS: dict[str, type[Alignment]] = {cls.name: cls for cls in (KLAlignment, WassersteinAlignment)}


def make_alignment(name: str, prior: Prior, rate: float | Sequence[float]) -> Alignment:
    if name not in ALIGNMENTS:
        raise KeyError(f"unknown alignment {name!r}; available: {', '.join(sorted(ALIGNMENTS))}")
    return ALIGNMENTS[name](prior, rate)
