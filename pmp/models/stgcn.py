"""A small network of the ST-GCN family (Yan et al. 2018; learnable adjacency as in 2s-AGCN).

The skeleton is a graph (the dataset's joint edges); each block mixes joints with a graph
convolution and frames with a temporal convolution, both Conv2d on (B, channels, T, V):

- spatial: per partition k a V x V mixing of the joints with A_k + B_k, then a 1x1 Conv2d from
  the K x C_in mixed channels to C_out, where A_0 = I (the joint itself), A_1 = the symmetrically normalised adjacency of the
  edges (zero without edges: generic data then starts from the identity), B_k a learnable offset
  (zero at init) that can add links the skeleton lacks (hand to hand on two-person data);
- temporal: a (kernel, 1) Conv2d over frames, optionally strided;
- BatchNorm after each, ReLU, a residual connection (1x1 Conv2d + BatchNorm when the shape changes).

Global average pooling over frames and joints, then a classifier. Sized for a 2-core CPU: by
default 4 blocks of 32-64 channels, the second and third halving the frames.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

PARTITIONS = 2  # self, neighbours


def adjacency(num_nodes: int, edges: list[tuple[int, int]] | list[list[int]] | None) -> torch.Tensor:
    """(PARTITIONS, V, V): the identity and D^-1/2 A D^-1/2 of the undirected edges (zeros if none)."""
    a = torch.zeros(num_nodes, num_nodes)
    for i, j in edges or []:
        if not (0 <= i < num_nodes and 0 <= j < num_nodes):
            raise ValueError(f"stgcn: edge ({i}, {j}) outside joints 0..{num_nodes - 1}")
        if i != j:
            a[i, j] = a[j, i] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    return torch.stack([torch.eye(num_nodes), inv[:, None] * a * inv[None, :]])


def _bn_conv(c_in: int, c_out: int, kernel: tuple[int, int] = (1, 1), stride: int = 1) -> nn.Sequential:
    pad = (kernel[0] // 2, 0)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, (stride, 1), pad, bias=False), nn.BatchNorm2d(c_out))


class STGCNBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_nodes: int, kernel: int, stride: int, residual: bool):
        super().__init__()
        # 1-D on purpose: the adjacency is not a layer's weight matrix, so the default pruning rule
        # (2+ dimensions) leaves it dense, like a bias.
        self.adj_offset = nn.Parameter(torch.zeros(PARTITIONS * num_nodes * num_nodes))
        self.gcn = nn.Sequential(nn.Conv2d(PARTITIONS * c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU())
        self.tcn = _bn_conv(c_out, c_out, (kernel, 1), stride)
        if not residual:
            self.res: nn.Module | None = None
        elif c_in == c_out and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = _bn_conv(c_in, c_out, stride=stride)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b, c, t, v = x.shape
        adj = a + self.adj_offset.view(PARTITIONS, v, v)
        # joints mixed first, then one 1x1 conv over (channel, partition): the same sum_k W_k X A_k
        # as ST-GCN's conv-then-mix, with fewer channels to mix in the first block
        h = torch.einsum("bctv,kvw->bcktw", x, adj).reshape(b, c * PARTITIONS, t, v)
        h = self.tcn(self.gcn(h))
        return torch.relu(h if self.res is None else h + self.res(x))


class STGCN(nn.Module):
    def __init__(
        self,
        num_nodes: int,
        in_frames: int,
        in_channels: int,
        num_classes: int,
        edges: list[tuple[int, int]] | list[list[int]] | None = None,
        channels: tuple[int, ...] | list[int] = (32, 32, 64, 64),
        strides: tuple[int, ...] | list[int] = (1, 2, 2, 1),
        kernel: int = 9,
        dropout: float = 0.2,
    ):
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"stgcn: channels {list(channels)} and strides {list(strides)} need the same length >= 1")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"stgcn: kernel must be odd and >= 1, got {kernel}")
        self.register_buffer("a", adjacency(num_nodes, edges), persistent=False)
        self.data_bn = nn.BatchNorm1d(num_nodes * in_channels)
        c_prev, blocks = in_channels, []
        for i, (c, s) in enumerate(zip(channels, strides)):
            blocks.append(STGCNBlock(c_prev, c, num_nodes, kernel, s, residual=i > 0))
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, V, C) skeleton sequences -> (B, num_classes) logits."""
        b, t, v, c = x.shape
        x = self.data_bn(x.reshape(b, t, v * c).transpose(1, 2)).view(b, v, c, t).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x, self.a)
        return self.classifier(self.drop(x.mean(dim=(2, 3))))


@register_model("stgcn", dataset_fields=("edges",))
def stgcn(**kwargs) -> STGCN:
    """ST-GCN-style network (graph from `edges`), about 0.12M weights at the default sizes."""
    return STGCN(**kwargs)
