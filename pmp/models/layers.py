"""Parameter-free layers that backbones share and that the sparse runtime swaps for compiled twins.

A computation inside a model's `forward` is invisible to the generic runtime (pmp/export/generic.py),
which only swaps modules; as a module it can run on a compiled kernel at inference while training
runs exactly these torch ops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class JointDistances(nn.Module):
    """Per frame, the upper triangle of the V x V joint distance matrix: (B, T, V, c) positions ->
    (B, pairs, T), channels first for Conv1d. One joint gives a single zero "distance"."""

    def __init__(self, num_nodes: int):
        super().__init__()
        self.num_nodes = v = num_nodes
        self.pairs = max(v * (v - 1) // 2, 1)
        first, second = self.joint_pairs()
        self.register_buffer("pairs_flat", torch.from_numpy(first * v + second), persistent=False)  # flat V x V

    def joint_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The (first, second) joints of each output channel: (0, 0) alone when V = 1."""
        v = self.num_nodes
        if v == 1:
            return np.zeros(1, np.int64), np.zeros(1, np.int64)
        first, second = np.triu_indices(v, k=1)
        return first.astype(np.int64), second.astype(np.int64)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        b, t, v = p.shape[:3]
        q = p.reshape(b * t, v, -1)
        # direct differences, not the |a|^2 + |b|^2 - 2ab form: exact, and a finite gradient at
        # distance zero (coincident joints, e.g. an absent second person's zeros)
        dist = torch.cdist(q, q, compute_mode="donot_use_mm_for_euclid_dist")
        return dist.reshape(b, t, v * v).index_select(2, self.pairs_flat).transpose(1, 2)
