"""Parameter-free layers that backbones share and that the sparse runtime swaps for compiled twins.

A computation inside a model's `forward` is invisible to the generic runtime (pmp/export/generic.py),
which only swaps modules; as a module it can run on a compiled kernel at inference while training
runs exactly these torch ops.
"""

from __future__ import annotations

import torch
from torch import nn


class JointDistances(nn.Module):
    """Per frame, the upper triangle of the V x V joint distance matrix: (B, T, V, c) positions ->
    (B, pairs, T), channels first for Conv1d. One joint gives a single zero "distance"."""

    def __init__(self, num_nodes: int):
        super().__init__()
        v = num_nodes
        self.pairs = max(v * (v - 1) // 2, 1)
        iu = torch.triu_indices(v, v, offset=1) if v > 1 else torch.zeros(2, 1, dtype=torch.long)
        self.register_buffer("first", iu[0], persistent=False)
        self.register_buffer("second", iu[1], persistent=False)
        self.register_buffer("pairs_flat", iu[0] * v + iu[1], persistent=False)  # in the flat V x V matrix

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        b, t, v = p.shape[:3]
        q = p.reshape(b * t, v, -1)
        # direct differences, not the |a|^2 + |b|^2 - 2ab form: exact, and a finite gradient at
        # distance zero (coincident joints, e.g. an absent second person's zeros)
        dist = torch.cdist(q, q, compute_mode="donot_use_mm_for_euclid_dist")
        return dist.reshape(b, t, v * v).index_select(2, self.pairs_flat).transpose(1, 2)
