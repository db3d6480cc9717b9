"""A compact temporal-convolution backbone of the DD-Net family (Yang et al. 2019).

Why this network: the attention GCN sees each joint's trajectory through one linear map and no
relative geometry; on FPHA and SBU inter-joint distances and motion carry most of what it misses
(../shared/notes/backbone.md). DD-Net feeds exactly those, computed here inside forward from the
first `coords` channels of the preprocessed (B, T, V, C) input, so it trains on the same tensor as
every other backbone (extra feature channels beyond `coords` are ignored):

- JCD: per frame, the upper triangle of the V x V joint distance matrix (translation and rotation
  invariant; on two-person data it includes every cross-person distance);
- slow motion P[t+1] - P[t] and fast motion P[t+2] - P[t] (the latter at every second frame);

each stream through 1-D temporal convolutions (kernel 1, 3, 1), concatenated at half the frame
rate, then three blocks of two kernel-3 convolutions with max pooling in time, a global max pool
over time, two fully connected layers and a classifier. On two-person data, `symmetric` averages
the logits of both person orders. Every convolution is Conv1d -> BatchNorm ->
LeakyReLU in an `nn.Sequential`, which the generic sparse runtime fuses (pmp/export/generic.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import swap_persons
from .layers import JointDistances
from .registry import register_model

_SLOPE = 0.2  # LeakyReLU slope, as in DD-Net


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm1d(c_out),
                         nn.LeakyReLU(_SLOPE))


def _embed(c_in: int, filters: int) -> nn.Sequential:
    """One input stream: kernel 1 (2f), kernel 3 (f), kernel 1 (f)."""
    return nn.Sequential(_conv(c_in, 2 * filters, 1), _conv(2 * filters, filters, 3), _conv(filters, filters, 1))


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Halve the frames (max of pairs); an odd last frame is kept alone, one frame stays one."""
    return F.max_pool1d(x, 2, ceil_mode=True) if x.shape[-1] > 1 else x


def _shift(p: torch.Tensor, step: int) -> torch.Tensor:
    """p[t + step] - p[t] over time (dim 1), zero past the last frame so the length stays T."""
    d = torch.zeros_like(p)
    if p.shape[1] > step:
        d[:, :-step] = p[:, step:] - p[:, :-step]
    return d


class DDNet(nn.Module):
    def __init__(
        self,
        num_nodes: int,
        in_frames: int,
        in_channels: int,
        num_classes: int,
        filters: int = 32,
        hidden: int = 128,
        coords: int = 3,
        dropout: float = 0.3,
        persons: int = 1,
        symmetric: bool = False,
    ):
        super().__init__()
        if filters < 1 or hidden < 1 or coords < 1:
            raise ValueError(f"ddnet: filters, hidden and coords must be >= 1, got {filters}, {hidden}, {coords}")
        if symmetric and persons != 2:
            raise ValueError(f"ddnet: symmetric averages the two person orders; the data has {persons} person(s)")
        self.symmetric = symmetric
        self.coords = min(coords, in_channels)
        v, c = num_nodes, self.coords
        self.distances = JointDistances(v)
        self.pairs = self.distances.pairs
        self.jcd_bn = nn.BatchNorm1d(self.pairs)
        self.jcd = _embed(self.pairs, filters)
        self.slow = _embed(v * c, filters)
        self.fast = _embed(v * c, filters)
        f = filters
        self.blocks = nn.Sequential(
            _conv(3 * f, 2 * f, 3), _conv(2 * f, 2 * f, 3),
            _conv(2 * f, 4 * f, 3), _conv(4 * f, 4 * f, 3),
            _conv(4 * f, 8 * f, 3), _conv(8 * f, 8 * f, 3),
        )
        self.head = nn.Sequential(
            nn.Linear(8 * f, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(_SLOPE), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(_SLOPE), nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def streams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """JCD (B, pairs, T), slow motion (B, V*c, T), fast motion (B, V*c, ceil(T/2)), channels first."""
        p = x[..., : self.coords]  # (B, T, V, c)
        b, t = p.shape[:2]
        slow = _shift(p, 1).reshape(b, t, -1)
        fast = _shift(p, 2)[:, ::2].reshape(b, -(-t // 2), -1)
        return self.distances(p), slow.transpose(1, 2), fast.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, V, C) skeleton sequences -> (B, num_classes) logits; `symmetric`: the mean of the
        logits of both person orders (pmp.data.preprocess.swap_persons), so the output does not
        depend on which slot holds whom."""
        if not self.symmetric:
            return self.logits(x)
        b = x.shape[0]
        both = self.logits(torch.cat([x, swap_persons(x)]))
        return (both[:b] + both[b:]) / 2

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        jcd, slow, fast = self.streams(x)
        h = torch.cat([_pool(self.jcd(self.jcd_bn(jcd))), _pool(self.slow(slow)), self.fast(fast)], dim=1)
        h = _pool(self.blocks[:2](h))
        h = _pool(self.blocks[2:4](h))
        h = self.blocks[4:](h).amax(dim=-1)  # global max pool over time
        return self.classifier(self.head(h))


@register_model("ddnet", dataset_fields=("persons",))
def ddnet(**kwargs) -> DDNet:
    """DD-Net-style temporal-conv net, about 0.45M weights at the default sizes on hands (V=21)."""
    return DDNet(**kwargs)
