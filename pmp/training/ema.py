"""An exponential moving average of the weights (`train.ema`), served as the finished network.

Why: on splits of a few hundred sequences the last iterate of a run is a noisy draw (ensembles of
two networks buy points on SBU, docs/backbones/agcn.md); the average of the iterates along the end
of training is a cheaper smoothing of the same noise, at no inference cost. It averages the
optimizer's parameters (under a pruning parametrization: the latent weights, which the masks then
apply to), bias-corrected as Adam's moments are: the average starts at zero and is divided by
1 - d^n, so iterate k weighs d^(n-k) / sum from the first step on, with no warm-up rule that a
short run (a few hundred steps here) would never leave. BatchNorm statistics collected for the raw
iterates do not fit the average, so the trainer re-estimates them on the training split once the
average is in place.
"""

from __future__ import annotations

import torch


class WeightAverage:
    def __init__(self, params: list[torch.Tensor], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1) (0 = off), got {decay!r}")
        self.decay, self.updates = decay, 0
        self.shadow = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def update(self, params: list[torch.Tensor]) -> None:
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1.0 - self.decay)

    @torch.no_grad()
    def reset(self) -> None:
        """Start over (weights rewound by the pruning method, e.g. LTH's rounds)."""
        for s in self.shadow:
            s.zero_()
        self.updates = 0

    @torch.no_grad()
    def copy_to(self, params: list[torch.Tensor]) -> None:
        """Write the average into `params` (no-op before the first update)."""
        if not self.updates:
            return
        correction = 1.0 - self.decay ** self.updates
        for s, p in zip(self.shadow, params, strict=True):
            p.copy_(s / correction)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        with torch.no_grad():
            for s, t in zip(self.shadow, state["shadow"], strict=True):
                s.copy_(t)
