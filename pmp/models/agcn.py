"""The paper's backbone: multi-head attention over skeleton joints, then a graph convolution.

Nodes are joints; a node's signal is its whole preprocessed trajectory, T x C values: with the
default configs, T temporal chunk means of the joint's position, its distances to every joint, its
bone and bone angle (pmp/data/features.py; docs/results.md has the ablation behind that). Each attention
head learns its own V x V adjacency from the node signals; the graph convolution mixes node signals
with each head's adjacency; a fully connected layer and a classifier follow. Most weights sit in
the fully connected layer (V x heads x width inputs): the network is deliberately oversized, since
pruning it is the point.

`temporal` > 0 keeps time as an axis instead (the chunks become time steps): the blocks run on each
chunk's node signals, C values, with weights shared over time; a temporal convolution of that
kernel per (node, head) over the chunks and a max over time follow, then the same fully connected
layer. Why: a flattened trajectory ties each feature to one position in time, so the same movement
a little earlier or faster reads as a different input; on SBU's held-out subjects that costs points
(docs/backbones/agcn.md measures it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import register_model


class AttentionBlock(nn.Module):
    """Multi-head attention over the nodes, then a graph convolution with each head's adjacency:
    (B, V, d_in) node signals -> (B, V, heads * gc_dim)."""

    def __init__(self, num_nodes: int, d_in: int, heads: int, attn_dim: int, gc_dim: int):
        super().__init__()
        self._build(num_nodes, d_in, heads, attn_dim, gc_dim)

    def _build(self, num_nodes: int, d_in: int, heads: int, attn_dim: int, gc_dim: int) -> None:
        self.heads, self.attn_dim, self.gc_dim = heads, attn_dim, gc_dim
        self.query = nn.Linear(d_in, heads * attn_dim)
        self.key = nn.Linear(d_in, heads * attn_dim)
        self.gc = nn.Linear(d_in, heads * gc_dim)
        self.gc_bn = nn.BatchNorm1d(num_nodes * heads * gc_dim)

    def adjacency(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head learned adjacency, (B, H, V, V), rows summing to one."""
        b, v, _ = x.shape
        q = self.query(x).view(b, v, self.heads, self.attn_dim).transpose(1, 2)
        k = self.key(x).view(b, v, self.heads, self.attn_dim).transpose(1, 2)
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.attn_dim), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, v, _ = x.shape
        a = self.adjacency(x)
        h = self.gc(x).view(b, v, self.heads, self.gc_dim).transpose(1, 2)  # (B, H, V, D)
        h = (a @ h).transpose(1, 2).reshape(b, -1)  # each head mixes nodes with its adjacency
        return torch.relu(self.gc_bn(h)).view(b, v, -1)


class AttentionGCN(AttentionBlock):
    """The first block's layers sit at the top level (query, key, gc, gc_bn: the names checkpoints,
    exports and the hand-tuned runtime use); `blocks` > 1 stacks more blocks, each with a residual
    connection, as the paper family stacks three."""

    def __init__(
        self,
        num_nodes: int,
        in_frames: int,
        in_channels: int,
        num_classes: int,
        heads: int = 8,
        attn_dim: int = 16,
        gc_dim: int = 16,
        hidden: int = 384,
        dropout: float = 0.3,
        blocks: int = 1,
        temporal: int = 0,
    ):
        if blocks < 1:
            raise ValueError(f"agcn: blocks must be >= 1, got {blocks}")
        if temporal < 0 or (temporal and temporal % 2 == 0):
            raise ValueError(f"agcn: temporal must be 0 (off) or an odd kernel size, got {temporal}")
        nn.Module.__init__(self)  # layers in the order of the one-block network (the same init for a seed)
        self.temporal = temporal
        d_in = in_channels if temporal else in_frames * in_channels
        self.num_nodes = num_nodes
        self.data_bn = nn.BatchNorm1d(num_nodes * d_in)
        self._build(num_nodes, d_in, heads, attn_dim, gc_dim)
        width = heads * gc_dim
        self.deeper = nn.ModuleList(AttentionBlock(num_nodes, width, heads, attn_dim, gc_dim) for _ in range(blocks - 1))
        if temporal:  # one filter bank per (node, head): groups of gc_dim channels
            self.tconv = nn.Conv1d(num_nodes * width, num_nodes * width, temporal, padding=temporal // 2,
                                   groups=num_nodes * heads)
            self.tbn = nn.BatchNorm1d(num_nodes * width)
        self.fc = nn.Linear(num_nodes * width, hidden)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, V, C) skeleton sequences -> (B, num_classes) logits."""
        b, t, v, c = x.shape
        if self.temporal:
            return self._head(self._temporal(x), b)
        x = x.permute(0, 2, 1, 3).reshape(b, v, t * c)  # node signal = joint trajectory
        x = self.data_bn(x.reshape(b, -1)).view(b, v, t * c)
        h = self.drop(super().forward(x))
        for block in self.deeper:
            h = self.drop(h + block(h))
        return self._head(h, b)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V, C) -> (B, V, heads * gc_dim): the blocks on every time step, then the temporal
        convolution and a max over time (dropout only after it: the convolution sees whole steps)."""
        b, t, v, c = x.shape
        x = self.data_bn(x.reshape(b * t, v * c)).view(b * t, v, c)
        h = super().forward(x)
        for block in self.deeper:
            h = h + block(h)
        h = h.reshape(b, t, -1).transpose(1, 2)  # (B, V * width, T)
        h = torch.relu(self.tbn(self.tconv(h))).amax(dim=-1)
        return self.drop(h).view(b, v, -1)

    def _head(self, h: torch.Tensor, b: int) -> torch.Tensor:
        h = self.drop(torch.relu(self.fc(h.reshape(b, -1))))
        return self.classifier(h)


@register_model("agcn")
def agcn(**kwargs) -> AttentionGCN:
    """Attention GCN (Sahbi-style), about 1M weights at the default sizes on hands (V=21)."""
    return AttentionGCN(**kwargs)
