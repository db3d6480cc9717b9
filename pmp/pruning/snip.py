"""SNIP: single-shot pruning at initialisation by connection sensitivity (Lee et al., 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import LossFn, Pruner, register_method


@register_method
class SNIP(Pruner):
    """Prune before training by |g * W| (g = dL/dW at initialisation), then train with masks fixed.

    |g * W| is the first-order change of the loss when a connection is removed. `batches` > 1
    averages g over that many training batches (a larger-batch estimate of the same gradient).
    Lee et al. normalise the scores by their sum; a common factor does not change the top-k.
    """

    name = "snip"

    def __init__(self, model: nn.Module, rate: float, *, batches: int = 1, **kwargs: Any):
        if batches < 1:
            raise ValueError(f"snip: batches must be >= 1, got {batches}")
        super().__init__(model, rate, **kwargs)
        self.batches = int(batches)

    def sensitivity(self, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """|mean gradient * W| per target; via autograd.grad, so no .grad is left behind."""
        weights = [self.latent(t.name) for t in self.targets]
        grads = [torch.zeros_like(w) for w in weights]
        for _ in range(self.batches):
            for acc, g in zip(grads, torch.autograd.grad(loss_fn(), weights, allow_unused=True)):
                if g is not None:  # a target the loss does not reach scores zero
                    acc.add_(g)
        return {t.name: (g / self.batches * w.detach()).abs() for t, g, w in zip(self.targets, grads, weights)}

    def on_train_start(self, loss_fn: LossFn) -> None:
        if self.masks is None:  # a resumed run keeps its masks
            self.set_masks(self.compute_masks(self.sensitivity(loss_fn)))

    def step(self, progress: float) -> bool:
        if self.masks is None:
            raise RuntimeError("snip: on_train_start(loss_fn) must run before training, to score the init")
        return super().step(progress)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "batches": self.batches}
