"""Exact top-k masks and the fixed-mask parametrization shared by all methods."""

from __future__ import annotations

import torch
from torch import nn


def kept_count(rate: float, n: int) -> int:
    """Weights kept out of `n` at pruning rate `rate`: exactly n - round(rate * n)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"pruning rate must be in [0, 1], got {rate}")
    return n - int(round(rate * n))


def _topk_flat(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask keeping the `keep` largest scores; ties go to the lower flat index."""
    flat = scores.detach().reshape(-1).float()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep > 0:
        # stable descending sort: equal scores keep index order, so ties break deterministically
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:keep]] = True
    return mask


def topk_masks(scores: dict[str, torch.Tensor], rate: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Masks that prune exactly round(rate * N) entries of the lowest score.

    scope="layer": N is each tensor's size (a per-layer budget);
    scope="global": N is the total over all tensors (one budget, layers compete).
    """
    if scope == "layer":
        return {k: _topk_flat(s, kept_count(rate, s.numel())).reshape(s.shape) for k, s in scores.items()}
    if scope == "global":
        names = list(scores)
        flat = torch.cat([scores[k].detach().reshape(-1).float() for k in names])
        mask = _topk_flat(flat, kept_count(rate, flat.numel()))
        out, start = {}, 0
        for k in names:
            n = scores[k].numel()
            out[k] = mask[start : start + n].reshape(scores[k].shape)
            start += n
        return out
    raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")


class FixedMask(nn.Module):
    """Parametrization W = W_latent * mask, for `torch.nn.utils.parametrize`.

    The effective weight is exactly zero where the mask is off, whatever the optimizer does to
    the latent tensor (momentum, weight decay)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask.to(w.dtype)
