"""Probabilistic Magnitude Pruning (Sahbi, 2023): train weights and topology jointly.

Every prunable tensor is reparametrized as W = W^ * psi(W^) (bandstop.py): psi shuts the band
|w| < a and its sharpness s is annealed, so the soft network becomes the pruned one. A penalty
lam * D(P || Q) (alignment.py) pulls the latent weights' distribution P towards a fixed prior Q
(priors.py), under which exactly a fraction r of the weights has |w| < a_Q(r).

Band edge. With edge="prior", a = a_Q(r), the paper's reading: the rate is met only as far as P
matches Q, and in a 98%-sparse layer a one-point miss halves what survives. With edge="empirical"
(default), a is the exact r-quantile of |W^| after every step (per tensor, or over all targets for
scope="global"), so the soft mask always prunes exactly the weights `finalize()` will prune, and
the prior term only shapes the distribution.

    pruner = PMP(model, rate=0.98, prior="gaussian")
    loss = task_loss + pruner.penalty(); loss.backward(); opt.step()
    pruner.step(progress)                      # progress in [0, 1]
    masks = pruner.finalize()                  # exactly round(r * N) zeros
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .alignment import ALIGNMENTS, make_alignment, subsample
from ._edge_kernel import bracket_pass
from .bandstop import BandStop
from .base import Pruner, register_method
from .masks import kept_count
from .priors import Prior, make_prior, matched_prior, standard_prior

DEFAULT_ALIGNMENT = "wasserstein"


def exact_edge(tensors: list[torch.Tensor], rate: float, scratch: np.ndarray | None = None,
               near: float | None = None) -> float:
    """Midpoint between the k-th and (k+1)-th smallest |w| over `tensors`, k = round(rate N):
    the threshold that prunes exactly what exact top-k prunes (bar ties at the edge).

    On CPU, numpy's in-place introselect in `scratch`, an array of the pooled size and dtype reused
    across steps (a fresh 4 MB buffer per step costs as much again in page faults). `near`, a
    previous edge: first try the bracket `near` +- BRACKET (relative) with one compiled pass
    (_edge_kernel.py), which selects among the few magnitudes inside it: the same value, ~5x
    less time on a 1M-weight tensor when the edge moved little."""
    flat = [t.detach().reshape(-1) for t in tensors]
    n = sum(f.numel() for f in flat)
    k = n - kept_count(rate, n)
    if flat[0].device.type != "cpu":
        mags = torch.cat(flat).abs()
        if k in (0, n):
            return _outside_edge(float(mags.min()), float(mags.max()), k)
        lo, hi = (float(torch.kthvalue(mags, j).values) for j in (k, k + 1))
        return (lo + hi) / 2.0
    arrays = [f.numpy() for f in flat]
    mags = scratch if scratch is not None else np.empty(n, dtype=arrays[0].dtype)
    if near is not None and 0 < k < n and near > 0 and math.isfinite(near):
        edge = _bracketed_edge(arrays, k, near, mags)
        if edge is not None:
            return edge
    if len(arrays) > 1:
        np.concatenate(arrays, out=mags)
    np.abs(arrays[0] if len(arrays) == 1 else mags, out=mags)
    if k in (0, n):
        return _outside_edge(float(mags.min()), float(mags.max()), k)
    # non-negative IEEE floats order as their bit patterns: integer introselect is 2x faster
    mags.view(f"i{mags.itemsize}").partition(k - 1)  # mags[k-1]: the k-th smallest; after it: >= it
    return (float(mags[k - 1]) + float(mags[k:].min())) / 2.0


#: Relative half-width of exact_edge's bracket around the previous edge, and the most of the
#: pooled magnitudes that the bracket may hold (beyond it the full selection is as cheap).
BRACKET, BRACKET_SHARE = 0.02, 1 / 16


def _bracketed_edge(arrays: list[np.ndarray], k: int, near: float, scratch: np.ndarray) -> float | None:
    """exact_edge's value from the magnitudes in [near (1 - BRACKET), near (1 + BRACKET)), or None
    when the k-th or (k+1)-th smallest lies outside it (or the bracket holds too many)."""
    dtype = scratch.dtype.type
    lo, hi = dtype(near * (1 - BRACKET)), dtype(near * (1 + BRACKET))
    room = scratch[: max(1, int(scratch.size * BRACKET_SHARE))]
    below = inside = 0
    min_above = math.inf
    for a in arrays:
        b, m, above = bracket_pass(a, lo, hi, room, inside)
        below, inside, min_above = below + b, inside + m, min(min_above, above)
    if inside > room.size or not below < k <= below + inside:
        return None
    band = room[:inside]
    j = k - below  # the k-th smallest overall is the j-th smallest in the bracket
    band.view(f"i{band.itemsize}").partition(j - 1)
    nxt = float(band[j:].min()) if j < inside else float(min_above)
    return (float(band[j - 1]) + nxt) / 2.0


def _outside_edge(smallest: float, largest: float, k: int) -> float:
    """The edge when nothing (k = 0) or everything is pruned: below or above every magnitude."""
    return smallest / 2.0 if k == 0 else 2.0 * largest + 1.0


@dataclass
class _Group:
    """Tensors sharing one prior and one band edge: one tensor (scope="layer") or all (global)."""

    names: list[str]
    prior: Prior
    edge: float = 0.0
    sharpness: float = 1.0
    scratch: torch.Tensor | None = None

    def scratch_for(self, latents: list[torch.Tensor]) -> np.ndarray | None:
        """exact_edge's buffer, kept across steps (CPU only; None elsewhere)."""
        if latents[0].device.type != "cpu":
            return None
        if self.scratch is None or self.scratch.dtype != latents[0].dtype:
            self.scratch = torch.empty(sum(t.numel() for t in latents), dtype=latents[0].dtype)
        return self.scratch.numpy()


@register_method
class PMP(Pruner):
    """Band-stop parametrization + prior alignment + annealed sharpness; exact top-k at the end.

    Sharpness s = s_rel / std(Q) with s_rel geometric in progress from `s_start` to `s_end`: in
    units of each tensor's prior scale, so one schedule fits layers of any fan-in. `prior_scale`
    None matches each prior's std to the weights' RMS at attach time (see priors.py).

    `hard_tail` > 0: the last fraction of training runs on the hard network that `finalize()`
    returns (the band-stops replaced by the exact top-k masks of that moment, the alignment off),
    so the survivors and the BatchNorm statistics adapt to it. Without it the band's edge lies
    between two magnitudes that training pulls together, each weighted about 1/2 by the soft
    network and 0 or 1 by the hard one; in a small layer feeding a BatchNorm that alone can cost
    tens of points (docs/backbones/stgcn.md)."""

    name = "pmp"

    def __init__(
        self,
        model: nn.Module,
        rate: float,
        scope: str = "layer",
        *,
        prior: str = "gaussian",
        prior_scale: float | None = None,
        alignment: str = DEFAULT_ALIGNMENT,
        lam: float = 1.0,
        s_start: float = 1.0,
        s_end: float = 1e4,
        edge: str = "empirical",
        ramp: float = 0.5,
        hard_tail: float = 0.0,
        subsample: int = 4096,
        seed: int = 0,
        include: list[str] | None = None,
        exclude: list[str] | tuple[str, ...] = (),
        exclude_last: bool = True,
    ):
        super().__init__(model, rate, scope, include, exclude, exclude_last)
        if edge not in ("empirical", "prior"):
            raise ValueError(f"pmp: edge must be 'empirical' or 'prior', got {edge!r}")
        if alignment not in ALIGNMENTS:
            raise KeyError(f"pmp: unknown alignment {alignment!r}; available: {', '.join(sorted(ALIGNMENTS))}")
        if not 0 < s_start <= s_end:
            raise ValueError(f"pmp: need 0 < s_start <= s_end, got {s_start}, {s_end}")
        if not 0.0 <= ramp < 1.0:
            raise ValueError(f"pmp: ramp must be in [0, 1), got {ramp}")
        if not 0.0 <= hard_tail < 1.0 - ramp:
            raise ValueError(f"pmp: hard_tail must be in [0, 1 - ramp) = [0, {1.0 - ramp:g}), got {hard_tail}")
        if lam < 0 or subsample < 1:
            raise ValueError(f"pmp: need lam >= 0 and subsample >= 1, got {lam}, {subsample}")
        self.prior_name, self.alignment_name, self.edge_rule, self.ramp = prior, alignment, edge, float(ramp)
        self.hard_tail = float(hard_tail)
        self.lam, self.s_start, self.s_end, self.subsample = float(lam), float(s_start), float(s_end), int(subsample)
        self.generator = torch.Generator(device=self.latent(self.targets[0].name).device).manual_seed(seed)
        names = [[t.name] for t in self.targets] if scope == "layer" else [[t.name for t in self.targets]]
        scales = [
            prior_scale if prior_scale is not None else matched_prior(prior, self._latents(ns)).scale for ns in names
        ]
        self._groups = self._make_groups(names, scales)
        # every group is scored against the unit-std prior on samples divided by its std
        self._align = make_alignment(alignment, standard_prior(prior), self.alignment_rates())
        self._bandstops: dict[str, BandStop] = {}
        for t in self.targets:
            band = BandStop(self.latent(t.name))
            parametrize.register_parametrization(self.module_of(t.name), t.param, band)
            self._bandstops[t.name] = band
        self.progress = 0.0
        self._schedule()

    def _make_groups(self, names: list[list[str]], scales: list[float]) -> list[_Group]:
        return [_Group(ns, make_prior(self.prior_name, scale)) for ns, scale in zip(names, scales)]

    def _latents(self, names: list[str]) -> list[torch.Tensor]:
        return [self.latent(n) for n in names]

    def alignment_rates(self) -> float | list[float]:
        """The rate(s) whose band edges the alignment term matches (KL bins; Wasserstein ignores them)."""
        return self.rate

    @property
    def priors(self) -> dict[str, Prior]:
        """The prior of each target (shared by all targets under scope="global")."""
        return {n: g.prior for g in self._groups for n in g.names}

    # ----------------------------------------------------------------- training hooks
    def penalty(self) -> torch.Tensor:
        """lam * mean over groups of D(P || Q) on a random subsample of each group's latent weights."""
        device = self.latent(self.targets[0].name).device
        if self.finalized or self.masks is not None or self.lam == 0.0:
            return torch.zeros((), device=device)
        by_size: dict[int, list[torch.Tensor]] = {}  # groups with equal sample sizes go in one batch
        for g in self._groups:
            x = subsample(self._latents(g.names), self.subsample, self.generator) / g.prior.std
            by_size.setdefault(x.numel(), []).append(x)
        return self.lam * torch.cat([self._align(torch.stack(xs)) for xs in by_size.values()]).mean()

    def step(self, progress: float) -> bool:
        self.progress = min(max(float(progress), 0.0), 1.0)
        if self.finalized or self.masks is not None:
            return super().step(progress)
        if self.hard_tail and self.progress >= 1.0 - self.hard_tail:
            self.harden()
            return False
        self._schedule()
        return False

    @torch.no_grad()
    def harden(self) -> None:
        """Start the hard tail: the band-stops give way to the exact top-k masks of the latent
        weights now (the ones `finalize()` would give), fixed from here on (base class)."""
        masks = self.compute_masks(self.final_scores())
        self._remove_bandstops()
        self.set_masks(masks)

    def _remove_bandstops(self) -> None:
        # leave_parametrized=False puts the latent Parameter object back, so the optimizer keeps it
        for t in self.targets:
            parametrize.remove_parametrizations(self.module_of(t.name), t.param, leave_parametrized=False)

    def sharpness_at(self, progress: float) -> float:
        """s_rel(progress): geometric from s_start to s_end, in units of 1 / std(Q)."""
        return self.s_start * (self.s_end / self.s_start) ** progress

    def rate_at(self, progress: float, rate: float | None = None) -> float:
        """The band's rate for target rate r (default: the pruner's): r * (1 - (1 - progress / ramp)^3)
        up to `ramp`, then r (ramp=0: r throughout).

        A ramp lets the topology be chosen while the weights mature (the cubic of Zhu & Gupta);
        the budget is still exactly r from `ramp` on, and at finalisation."""
        rate = self.rate if rate is None else rate
        if progress >= self.ramp:
            return rate
        return rate * (1.0 - (1.0 - progress / self.ramp) ** 3)

    @torch.no_grad()
    def group_edge(self, g: _Group, rate: float) -> float:
        """The band edge of group `g` at band rate `rate`: the exact quantile of |W^|, or a_Q(rate)."""
        if self.edge_rule == "empirical":
            latents = self._latents(g.names)
            near = g.edge if g.edge > 0 else None  # the previous step's edge brackets this one
            return exact_edge(latents, rate, g.scratch_for(latents), near)
        return g.prior.band_edge(rate)

    def set_band(self, edges: list[float]) -> None:
        """Write one edge per group (and the group's current sharpness) into its band-stops."""
        for g, edge in zip(self._groups, edges):
            for n in g.names:
                self._bandstops[n].set(edge, g.sharpness)

    @torch.no_grad()
    def _schedule(self) -> None:
        """Set every group's sharpness and band edge for the current progress."""
        s_rel, rate = self.sharpness_at(self.progress), self.rate_at(self.progress)
        for g in self._groups:
            g.sharpness = s_rel / g.prior.std
            g.edge = self.group_edge(g, rate)
        self.set_band([g.edge for g in self._groups])

    # ----------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def prior_mismatch(self) -> dict[str, Any]:
        """Fraction of latent weights with |W^| < a_Q(r), per tensor and overall, against r.

        How far P is from Q where it matters: with edge="prior" the hard mask prunes round(r N)
        weights while the soft network pruned only this fraction."""
        per: dict[str, float] = {}
        below = 0
        for g in self._groups:
            a = g.prior.band_edge(self.rate)
            for n in g.names:
                count = int((self.latent(n).abs() < a).sum())
                per[n] = count / self.latent(n).numel()
                below += count
        return {"rate": self.rate, "overall": below / self.numel(), "per_tensor": per}

    @torch.no_grad()
    def soft_to_hard(self) -> dict[str, Any]:
        """How far the soft network is from the one `finalize()` would give.

        psi_in_band / psi_out_band: mean psi over |W^| < a and over the rest (0 and 1 when crisp);
        relative_gap: ||W^ psi - W^ m|| / ||W^ psi||, m the exact top-k masks of finalize();
        per tensor also its size, band edge, and how many weights sit in the band-stop's transition
        (|s (|W^| - a)| < 5: psi neither ~0 nor ~1), the ones hardening moves most."""
        if self.finalized or self.masks is not None:
            raise RuntimeError("pmp: soft_to_hard() needs the soft network; the pruner is finalized or in its hard tail")
        masks = self.compute_masks(self.final_scores())
        per: dict[str, dict[str, float]] = {}
        psi_in = psi_out = gap = norm = 0.0
        n_in = 0
        for g in self._groups:
            for n in g.names:
                w = self.latent(n)
                psi = self._bandstops[n].gate(w)
                band = w.abs() < g.edge
                t_in, t_out, c_in = float(psi[band].sum()), float(psi[~band].sum()), int(band.sum())
                per[n] = {"psi_in_band": t_in / max(c_in, 1), "psi_out_band": t_out / max(w.numel() - c_in, 1),
                          "numel": w.numel(), "edge": g.edge,
                          "in_transition": int((g.sharpness * (w.abs() - g.edge)).abs().lt(5).sum())}
                psi_in, psi_out, n_in = psi_in + t_in, psi_out + t_out, n_in + c_in
                soft = w * psi
                gap += float((soft - w * masks[n]).square().sum())
                norm += float(soft.square().sum())
        return {
            "psi_in_band": psi_in / max(n_in, 1),
            "psi_out_band": psi_out / max(self.numel() - n_in, 1),
            "relative_gap": math.sqrt(gap / norm) if norm > 0 else 0.0,
            "per_tensor": per,
            "prior_mismatch": self.prior_mismatch(),
        }

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "prior": self.prior_name, "alignment": self.alignment_name, "lam": self.lam,
            "s_start": self.s_start, "s_end": self.s_end, "edge": self.edge_rule, "ramp": self.ramp,
            "hard_tail": self.hard_tail, "subsample": self.subsample,
            "prior_scales": {n: q.scale for n, q in self.priors.items()},
        }

    # ----------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict[str, Any]:
        """Schedule state, prior scales (fixed at attach time) and the subsampling RNG, so a
        restored run continues exactly as an uninterrupted one."""
        return {
            "progress": self.progress,
            "finalized": self.finalized,
            "hard": self.masks is not None,
            "scales": [g.prior.scale for g in self._groups],
            "edges": [g.edge for g in self._groups],
            "sharpness": [g.sharpness for g in self._groups],
            "generator": self.generator.get_state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.progress = float(state["progress"])
        if state.get("hard") and not state.get("finalized"):  # the masks follow (Pruner.load_state_dict)
            self._remove_bandstops()
        self._groups = self._make_groups([g.names for g in self._groups], [float(s) for s in state["scales"]])
        for g, a, s in zip(self._groups, state["edges"], state["sharpness"]):
            g.edge, g.sharpness = float(a), float(s)
        self.set_band([g.edge for g in self._groups])
        self.generator.set_state(state["generator"].to(torch.uint8).cpu())
        if state["finalized"] and not self.finalized:
            self._remove_bandstops()
            self.finalized = True
