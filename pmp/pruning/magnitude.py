"""Magnitude baselines: one-shot MP after dense training, and gradual GMP (Zhu & Gupta, 2017).

Both, and LTH (lottery.py), rank weights by |W| through `MagnitudePruner.prune_to`; they differ
only in when and how much they prune, so a comparison between them isolates the schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import LossFn, Pruner, register_method


class MagnitudePruner(Pruner):
    """Exact top-k of |W| with monotone masks: a weight pruned once never regrows.

    Regrowth is ruled out by ranking already-pruned entries below every survivor (score -1), so
    each new mask is a subset of the previous one, as in TF model-optimization's pruning."""

    def __init__(self, model: nn.Module, rate: float, **kwargs: Any):
        super().__init__(model, rate, **kwargs)
        self.sparsity = 0.0  # the rate the current masks were computed for

    def magnitude_scores(self) -> dict[str, torch.Tensor]:
        scores = {t.name: self.latent(t.name).detach().abs().float() for t in self.targets}
        if self.masks is not None:
            scores = {k: torch.where(self.masks[k].to(s.device), s, -1.0) for k, s in scores.items()}
        return scores

    def prune_to(self, sparsity: float) -> None:
        """Fix masks pruning exactly round(sparsity * N) of the smallest |W| over the scope."""
        self.set_masks(self.compute_masks(self.magnitude_scores(), sparsity))
        self.sparsity = sparsity

    def final_scores(self) -> dict[str, torch.Tensor]:
        return self.magnitude_scores()

    def extra_state(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.sparsity = float(state["sparsity"])


@register_method
class MagnitudePruning(MagnitudePruner):
    """MP: train dense until `prune_at` of training, prune to the rate by |W|, fine-tune masked.

    The total length equals every other method's; `prune_at` only splits it, and `describe()`
    records the split. prune_at=0 prunes the initialisation, prune_at=1 leaves no fine-tuning."""

    name = "mp"

    def __init__(self, model: nn.Module, rate: float, *, prune_at: float = 0.5, **kwargs: Any):
        if not 0.0 <= prune_at <= 1.0:
            raise ValueError(f"mp: prune_at must be in [0, 1], got {prune_at}")
        super().__init__(model, rate, **kwargs)
        self.prune_at = float(prune_at)

    def on_train_start(self, loss_fn: LossFn) -> None:
        self._prune_if_due(0.0)

    def step(self, progress: float) -> bool:
        self.enforce_masks()
        self._prune_if_due(progress)
        return False

    def _prune_if_due(self, progress: float) -> None:
        if self.masks is None and progress >= self.prune_at:
            self.prune_to(self.rate)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "prune_at": self.prune_at,
            "dense_epochs_fraction": self.prune_at, "finetune_epochs_fraction": 1.0 - self.prune_at,
        }


def gmp_sparsity(progress: float, final: float, begin: float, end: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3.

    Time is the fraction of training: t0 = begin, n*dt = end - begin. Steep early, when many
    weights are redundant, flat near the end so the network recovers from the last cuts.
    """
    frac = min(max((progress - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


@register_method
class GradualMagnitudePruning(MagnitudePruner):
    """GMP: sparsity follows `gmp_sparsity` over [begin, end] of training, masks recomputed from
    |W| every `update_every` optimizer steps (exact count each time), then fixed at the rate."""

    name = "gmp"

    def __init__(
        self,
        model: nn.Module,
        rate: float,
        *,
        begin: float = 0.1,
        end: float = 0.6,
        initial_sparsity: float = 0.0,
        update_every: int = 10,
        **kwargs: Any,
    ):
        if not 0.0 <= begin < end <= 1.0:
            raise ValueError(f"gmp: need 0 <= begin < end <= 1, got begin={begin}, end={end}")
        if not 0.0 <= initial_sparsity <= rate:
            raise ValueError(f"gmp: initial_sparsity must be in [0, rate={rate}], got {initial_sparsity}")
        if update_every < 1:
            raise ValueError(f"gmp: update_every must be >= 1, got {update_every}")
        super().__init__(model, rate, **kwargs)
        self.begin, self.end = float(begin), float(end)
        self.initial_sparsity = float(initial_sparsity)
        self.update_every = int(update_every)
        self.steps = 0
        self.last_update = -1  # step of the last mask update; -1 = none yet

    def schedule(self, progress: float) -> float:
        return gmp_sparsity(progress, self.rate, self.begin, self.end, self.initial_sparsity)

    def step(self, progress: float) -> bool:
        self.enforce_masks()
        self.steps += 1
        if progress < self.begin or (self.masks is not None and self.sparsity >= self.rate):
            return False
        # the step that reaches `end` always updates, so the schedule lands exactly on the rate
        if self.last_update < 0 or self.steps - self.last_update >= self.update_every or progress >= self.end:
            self.prune_to(self.schedule(progress))
            self.last_update = self.steps
        return False

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "steps": self.steps, "last_update": self.last_update}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.steps, self.last_update = int(state["steps"]), int(state["last_update"])

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "begin": self.begin, "end": self.end,
            "initial_sparsity": self.initial_sparsity, "update_every": self.update_every,
        }
