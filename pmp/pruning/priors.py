"""Zero-mean symmetric priors Q for the latent weights, and the band edge a(r) each implies.

PMP trains the latent weights W^ towards a fixed prior Q; then "prune the fraction r of smallest
magnitudes" becomes "prune |w| < a(r)" with a(r) = F_Q^-1((1 + r) / 2), because exactly a fraction r
of a symmetric Q lies in (-a, a).

Scale rule (`matched_prior`): a tensor's prior has the second moment of the tensor when the pruner
attaches, i.e. the prior's std equals the RMS of the weights (the zero-mean moment estimate).
Attached at initialisation, that is the initialiser's std, so each layer keeps its fan-in scale
and the prior does not fight the init's signal propagation. PyTorch's default Linear/Conv init is
uniform, so the matched uniform prior reproduces it exactly; Gaussian and Laplace share its variance.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch

#: Probabilities are kept this far from 0 and 1 so that quantiles of unbounded priors stay finite.
_EPS = 1e-7


class Prior:
    """A zero-mean symmetric distribution with one scale parameter. Computations in float64."""

    name: ClassVar[str]
    #: std / scale, so `from_std` and `std` need no per-class code.
    std_per_scale: ClassVar[float]

    def __init__(self, scale: float):
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"{self.name} prior: scale must be positive and finite, got {scale}")
        self.scale = float(scale)

    @classmethod
    def from_std(cls, std: float) -> Prior:
        return cls(std / cls.std_per_scale)

    @property
    def std(self) -> float:
        return self.scale * self.std_per_scale

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_pdf(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def quantile(self, p: torch.Tensor | float) -> torch.Tensor:
        """F^-1(p), closed form."""
        raise NotImplementedError

    def pdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_pdf(x).exp()

    def magnitude_quantile(self, p: torch.Tensor | float) -> torch.Tensor:
        """Quantile of |w| for w ~ Q: a fraction p of the magnitudes lies below it."""
        return self.quantile((1.0 + _as_prob(p)) / 2.0)

    def band_edge(self, rate: float) -> float:
        """a(r) = F^-1((1 + r) / 2): exactly a fraction r of Q has |w| < a."""
        return float(self.magnitude_quantile(rate))

    def sample(self, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """Inverse-CDF sampling (float32), so every prior samples the same way."""
        u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
        return self.quantile(u).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale:.4g})"


def _as_prob(p: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(p, dtype=torch.float64).clamp(_EPS, 1.0 - _EPS)


class Gaussian(Prior):
    """N(0, scale^2): a(r) = scale * sqrt(2) * erfinv(r)."""

    name = "gaussian"
    std_per_scale = 1.0

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1.0 + torch.erf(x.double() / (self.scale * math.sqrt(2.0))))

    def log_pdf(self, x: torch.Tensor) -> torch.Tensor:
        z = x.double() / self.scale
        return -0.5 * z * z - math.log(self.scale * math.sqrt(2.0 * math.pi))

    def quantile(self, p: torch.Tensor | float) -> torch.Tensor:
        return self.scale * math.sqrt(2.0) * torch.erfinv(2.0 * _as_prob(p) - 1.0)


class Laplace(Prior):
    """Laplace(0, scale): heavier tails, more mass at zero; a(r) = -scale * ln(1 - r)."""

    name = "laplace"
    std_per_scale = math.sqrt(2.0)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return 0.5 + 0.5 * torch.sign(x) * (1.0 - torch.exp(-x.abs() / self.scale))

    def log_pdf(self, x: torch.Tensor) -> torch.Tensor:
        return -x.double().abs() / self.scale - math.log(2.0 * self.scale)

    def quantile(self, p: torch.Tensor | float) -> torch.Tensor:
        c = _as_prob(p) - 0.5
        return -self.scale * torch.sign(c) * torch.log1p(-2.0 * c.abs())


class Uniform(Prior):
    """U[-scale, scale]: PyTorch's default init family; a(r) = r * scale."""

    name = "uniform"
    std_per_scale = 1.0 / math.sqrt(3.0)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() + self.scale) / (2.0 * self.scale)).clamp(0.0, 1.0)

    def log_pdf(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return torch.where(x.abs() <= self.scale, x.new_tensor(-math.log(2.0 * self.scale)), x.new_tensor(-math.inf))

    def quantile(self, p: torch.Tensor | float) -> torch.Tensor:
        return self.scale * (2.0 * _as_prob(p) - 1.0)


PRIORS: dict[str, type[Prior]] = {cls.name: cls for cls in (Gaussian, Laplace, Uniform)}


def _prior_class(name: str) -> type[Prior]:
    if name not in PRIORS:
        raise KeyError(f"unknown prior {name!r}; available: {', '.join(sorted(PRIORS))}")
    return PRIORS[name]


def make_prior(name: str, scale: float) -> Prior:
    return _prior_class(name)(scale)


def standard_prior(name: str) -> Prior:
    """The prior `name` with std 1: scale-free alignments score weights / std against it."""
    return _prior_class(name).from_std(1.0)


def matched_prior(name: str, weights: torch.Tensor | Sequence[torch.Tensor]) -> Prior:
    """The prior `name` whose std equals the RMS of `weights` (one tensor, or a pool of them)."""
    cls = _prior_class(name)
    tensors = [weights] if isinstance(weights, torch.Tensor) else list(weights)
    sq = sum(float(t.detach().double().square().sum()) for t in tensors)
    n = sum(t.numel() for t in tensors)
    rms = math.sqrt(sq / max(n, 1))
    if rms == 0.0:
        raise ValueError("cannot match a prior to all-zero weights; pass an explicit prior_scale")
    return cls.from_std(rms)
