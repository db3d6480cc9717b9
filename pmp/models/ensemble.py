"""A deep ensemble: several independently trained copies of one registered backbone, their
class probabilities averaged (the score fusion PYSKL and 2s-AGCN report their numbers with).

Why one module and not several runs fused afterwards: the ensemble then trains, prunes, exports
and deploys through the same CLI, configs, sweeps and sparse runtime as any backbone. Its members
share no parameters, and the trainer trains each on its own loss, batch order and augmentation
(pmp/training/trainer.py): member 0 draws them as the backbone alone would, member i from
generators of its own, so a member learns as if trained alone. Sharing the batches costs most of
the gain (a measured paired check, docs/backbones/ensemble.md). The output is the fused
prediction: log of the mean of the members' softmax, a valid log-probability whose argmax is the
mean-probability vote. Pruning works unchanged: each member's layers are ordinary targets.

    model: {name: ensemble, kwargs: {model: ddnet, members: 2, kwargs: {filters: 32, hidden: 128}}}
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .registry import ALL_FIELDS, create_model, model_dataset_fields, register_model


def fuse(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """log(mean_i softmax(logits_i)): probability averaging, kept in log space."""
    stacked = torch.stack([z.log_softmax(-1) for z in logits])
    return torch.logsumexp(stacked, 0) - math.log(len(logits))


class Ensemble(nn.Module):
    def __init__(self, num_nodes: int, in_frames: int, in_channels: int, num_classes: int, model: str = "ddnet",
                 members: int = 2, kwargs: dict[str, Any] | None = None, **fields: Any):
        super().__init__()
        if model == "ensemble":
            raise ValueError("ensemble: a member cannot itself be an ensemble (raise `members` instead)")
        if not isinstance(members, int) or members < 1:
            raise ValueError(f"ensemble: members must be an integer >= 1, got {members!r}")
        known = set(model_dataset_fields("ensemble"))
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"ensemble: unexpected keyword(s) {unknown} (the member's options go in `kwargs`)")
        needed = model_dataset_fields(model)  # raises KeyError naming the registered models
        member_kwargs = dict(num_nodes=num_nodes, in_frames=in_frames, in_channels=in_channels, num_classes=num_classes,
                             **{f: fields[f] for f in needed if f in fields}, **(kwargs or {}))
        self.members = nn.ModuleList(create_model(model, **member_kwargs) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, V, C) -> (B, num_classes) fused log-probabilities."""
        return fuse([m(x) for m in self.members])


@register_model("ensemble", dataset_fields=ALL_FIELDS)
def ensemble(**kwargs) -> Ensemble:
    """`members` independently trained copies of a registered backbone (default 2 x ddnet)."""
    return Ensemble(**kwargs)
