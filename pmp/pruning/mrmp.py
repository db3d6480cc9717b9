"""Multi-rate PMP (after Sahbi, "One-Shot Multi-Rate Pruning of GCNs", arXiv 2312.17615).

One set of latent weights W^ serves every pruning rate r in a trained range [lo, hi]: the network
at rate r is W^ * m_r with m_r the exact top-k of |W^| (k = N - round(r N), per tensor or over all
targets). One ranking serves every rate, so the masks are nested by construction: a weight kept at
0.99 is kept at 0.98 (ties broken by index, the same way at every rate).

Training is PMP's (pmp.py: band-stop parametrization, prior alignment, annealed sharpness, empirical
or prior band edge, rate ramp), with the task loss averaged over several rates' networks: each
training step sets the band-stops to one rate's edge, runs the forward pass, and repeats for the
step's other rates; one backward pass then trains the shared latent weights for all of them.
`mode="all"` trains every training rate at every step (cost ~K forward/backward passes), `"sample"`
draws `samples` of them per step (cost ~`samples` passes).

    pruner = MRMP(model, rates=[0.5, 0.9, 0.98, 0.99])    # or rate_range=[0.5, 0.99]
    loss = pruner.task_loss(lambda: task_loss(model(x), y)) + pruner.penalty()
    loss.backward(); opt.step(); pruner.step(progress)
    masks = pruner.finalize(rate=0.95)                      # any rate in [0.5, 0.99]
    masks = pruner.finalize(rate=0.99)                      # ... and then another

BatchNorm layers after pruned ones see different activations at each rate: `recalibrate_batchnorm`
re-estimates their running statistics for one rate's network from training inputs (no weight
update), which the trainer does for every rate it serves when `bn_recalibrate` is on.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .base import register_method
from .masks import topk_masks
from .pmp import PMP

MODES = ("sample", "all")
#: Slack when checking that a rate lies in the trained range (rates typed as decimals).
_RATE_TOL = 1e-9


def nested_masks(latents: dict[str, torch.Tensor], rate: float, scope: str) -> dict[str, torch.Tensor]:
    """Exact top-k of |W^| at `rate` (per tensor, or over all for scope="global"): the same
    ranking at every rate, so the masks of two rates are nested."""
    return topk_masks({k: v.detach().abs().float() for k, v in latents.items()}, rate, scope)


def log_density_grid(lo: float, hi: float, points: int) -> list[float]:
    """`points` rates from lo to hi evenly spaced in log(1 - r): accuracy changes with the log of
    the density, so 0.5..0.99 gets as many points above 0.9 as below."""
    if points == 1:
        return [hi]
    a, b = math.log1p(-lo), math.log1p(-hi)
    return [1.0 - math.exp(a + (b - a) * i / (points - 1)) for i in range(points)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean and variance as the average over `inputs`
    (batches, in order) of the network as it is now; nothing else changes (dropout stays off).
    Returns the number of BatchNorm layers recalibrated."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    seen = 0
    for x in inputs:
        model(x)
        seen += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    if not seen:
        raise ValueError("recalibrate_batchnorm: no input batches")
    return len(norms)


@register_method
class MRMP(PMP):
    """PMP's shared latent weights trained at several rates; any rate of the range read off them.

    `rates` (training rates) or `rate_range` ([lo, hi]: rates drawn per step, uniform in
    log(1 - r); in mode "all" the `points`-rate log-density grid). `always_highest`: in mode
    "sample", the highest rate (the sparsest network, whose weights every rate keeps) is one of
    the `samples` rates of every step. `rate` is the rate `finalize()`
    uses by default and the run's headline rate (0: the highest rate served). `eval_rates`: the
    rates a training run evaluates and reports at the end (default: the training rates, or the
    grid). `bn_recalibrate`: read each rate's network with BatchNorm statistics recalibrated on
    training inputs (used by the trainer and `pmp eval/export --rate`). Other options: PMP's."""

    name = "mrmp"
    serves_rates = True

    def __init__(
        self,
        model: nn.Module,
        rate: float = 0.0,
        scope: str = "layer",
        *,
        rates: list[float] | None = None,
        rate_range: list[float] | None = None,
        mode: str = "sample",
        samples: int = 1,
        always_highest: bool = False,
        points: int = 6,
        eval_rates: list[float] | None = None,
        bn_recalibrate: bool = True,
        seed: int = 0,
        **pmp_options: Any,
    ):
        if (rates is None) == (rate_range is None):
            raise ValueError("mrmp: give exactly one of `rates` (a list) and `rate_range` ([lo, hi])")
        if mode not in MODES:
            raise ValueError(f"mrmp: mode must be one of {MODES}, got {mode!r}")
        if pmp_options.get("hard_tail"):
            raise ValueError("mrmp: hard_tail fixes one rate's masks, and a multi-rate network has none to fix")
        if points < 1:
            raise ValueError(f"mrmp: points must be >= 1, got {points}")
        if rates is not None:
            if not isinstance(rates, (list, tuple)) or not rates:
                raise ValueError(f"mrmp: rates must be a non-empty list, got {rates!r}")
            self.train_rates = sorted({float(r) for r in rates})
            self.rate_range: tuple[float, float] | None = None
            lo, hi = self.train_rates[0], self.train_rates[-1]
        else:
            if not isinstance(rate_range, (list, tuple)) or len(rate_range) != 2 or not rate_range[0] < rate_range[1]:
                raise ValueError(f"mrmp: rate_range must be [lo, hi] with lo < hi, got {rate_range!r}")
            lo, hi = float(rate_range[0]), float(rate_range[1])
            self.rate_range = (lo, hi)
            self.train_rates = log_density_grid(lo, hi, points)
        if not (0.0 <= lo and hi < 1.0):
            raise ValueError(f"mrmp: rates must lie in [0, 1), got [{lo}, {hi}]")
        count = len(self.train_rates) if self.rate_range is None else math.inf
        least = 2 if always_highest else 1
        if not least <= samples <= count:
            raise ValueError(f"mrmp: samples must be in [{least}, {count}]"
                             f"{' with always_highest' if always_highest else ''}, got {samples}")
        self.lo, self.hi, self.mode, self.samples, self.points = lo, hi, mode, int(samples), int(points)
        self.always_highest = bool(always_highest)
        self.bn_recalibrate = bool(bn_recalibrate)
        rate = hi if rate == 0.0 else float(rate)
        self.check_rate(rate)
        super().__init__(model, rate, scope, seed=seed, **pmp_options)
        self.eval_rates = sorted({self.check_rate(float(r)) for r in (eval_rates or self.train_rates)} | {self.rate})
        self.rate_generator = torch.Generator().manual_seed(seed + 1)
        self._store: dict[str, torch.Tensor] | None = None  # the latent weights, once finalized
        self.served_rate: float | None = None

    def alignment_rates(self) -> list[float]:
        return self.train_rates

    def check_rate(self, rate: float) -> float:
        """`rate` if it lies in the trained range, else a ValueError naming the range."""
        if not self.lo - _RATE_TOL <= rate <= self.hi + _RATE_TOL:
            raise ValueError(f"mrmp: rate {rate:g} is outside the trained range [{self.lo:g}, {self.hi:g}]")
        return float(rate)

    # ----------------------------------------------------------------- training
    def step_rates(self) -> list[float]:
        """The rates whose networks the next step trains: in "sample" mode `samples` of them drawn
        from `rate_generator`, the highest one among them at every step if `always_highest`."""
        if self.mode == "all":
            return list(self.train_rates)
        fixed = [self.hi] if self.always_highest else []
        count = self.samples - len(fixed)
        if self.rate_range is None:
            pool = [r for r in self.train_rates if r not in fixed]
            pick = torch.randperm(len(pool), generator=self.rate_generator)[:count]
            return sorted([pool[i] for i in pick.tolist()] + fixed)
        u = torch.rand(count, generator=self.rate_generator, dtype=torch.float64).tolist()
        a, b = math.log1p(-self.lo), math.log1p(-self.hi)
        return sorted([1.0 - math.exp(a + (b - a) * x) for x in u] + fixed)

    def task_loss(self, loss_fn: Callable[[], Any]) -> Any:
        """Mean of `loss_fn()` over the step's rates, each computed with the band-stops at that
        rate's edge. `loss_fn` returns a loss, or a tuple whose first entry is the loss (the rest is
        passed through from the last rate's call). The band-stops end at the default rate's edge."""
        if self.finalized:
            return loss_fn()
        rates = self.step_rates()
        edges = [[self.group_edge(g, self.rate_at(self.progress, r)) for g in self._groups] for r in rates]
        total: torch.Tensor | None = None
        rest: tuple = ()
        for band in edges:
            self.set_band(band)
            out = loss_fn()
            loss, rest = (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, ())
            total = loss if total is None else total + loss
        self.set_band([g.edge for g in self._groups])
        assert total is not None
        mean = total / len(rates)
        return (mean, *rest) if isinstance(out, tuple) else mean

    # ----------------------------------------------------------------- serving rates
    def latent_weights(self) -> dict[str, torch.Tensor]:
        """The shared latent tensors by target name (kept aside once finalized)."""
        if self._store is not None:
            return self._store
        return {t.name: self.latent(t.name).detach() for t in self.targets}

    def masks_at(self, rate: float) -> dict[str, torch.Tensor]:
        """Hard masks of the network at `rate`: exactly round(rate N) zeros over the scope, nested."""
        return nested_masks(self.latent_weights(), self.check_rate(rate), self.scope)

    @torch.no_grad()
    def finalize(self, rate: float | None = None) -> dict[str, torch.Tensor]:
        """Plain weights W^ * m_rate (default: the pruner's rate); the latent weights are kept, so
        a later `finalize(rate=...)` or `masks_at(...)` serves another rate."""
        rate = self.rate if rate is None else self.check_rate(rate)
        if not self.finalized:
            self._store = {n: w.clone() for n, w in self.latent_weights().items()}
            self._remove_bandstops()
            self.finalized = True
        masks = self.masks_at(rate)
        assert self._store is not None
        for name, w in self._store.items():
            self.effective(name).copy_(w * masks[name].to(w.dtype))
        self.masks, self.served_rate = masks, rate
        return masks

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "rates": self.train_rates, "rate_range": list(self.rate_range or []) or None,
            "served_range": [self.lo, self.hi], "mode": self.mode, "samples": self.samples,
            "always_highest": self.always_highest, "points": self.points,
            "eval_rates": self.eval_rates, "bn_recalibrate": self.bn_recalibrate,
        }

    # ----------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict[str, Any]:
        state = {**super().extra_state(), "rate_generator": self.rate_generator.get_state()}
        if self._store is not None:
            state.update(latent=dict(self._store), served_rate=self.served_rate)
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.rate_generator.set_state(state["rate_generator"].to(torch.uint8).cpu())
        if "latent" in state:
            self._store = {k: v.clone() for k, v in state["latent"].items()}
            self.served_rate = float(state["served_rate"])
