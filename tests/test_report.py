"""Sparsity report: per-layer density, totals, MACs by hooks and flop counter, JSON, text."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pmp.pruning import PMP, format_report, sparsity_report


class Net(nn.Module):
    """Linear, grouped Conv2d and Conv1d, plus a matmul outside any module."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 8, 3)  # (B, 3, 10) -> (B, 8, 8)
        self.c2 = nn.Conv2d(8, 4, (1, 3), groups=2)  # (B, 8, 1, 8) -> (B, 4, 1, 6)
        self.fc = nn.Linear(24, 5)
        self.norm = nn.LayerNorm(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x)).unsqueeze(2))).flatten(1)
        h = self.norm(self.fc(h))
        return h @ h.transpose(0, 1)  # (B, B): B*B*5 MACs the hooks do not see


B = 2
DENSE_MACS = {"c1.weight": B * 8 * 8 * 3 * 3, "c2.weight": B * 4 * 6 * 4 * 3, "fc.weight": B * 5 * 24}


def test_dense_model_without_masks() -> None:
    torch.manual_seed(0)
    model = Net()
    r = sparsity_report(model, input_example=torch.randn(B, 3, 10))
    assert [l.name for l in r.layers] == ["c1.weight", "c2.weight", "fc.weight"]
    assert all(l.density == 1.0 for l in r.layers)
    assert {l.name: l.macs_dense for l in r.layers} == DENSE_MACS
    assert r.model_macs_dense == sum(DENSE_MACS.values()) + B * B * 5
    assert r.total_numel == sum(p.numel() for p in model.parameters()) == r.total_kept
    assert model.training  # the report's eval-mode forward restores the mode


def test_masked_model_counts_kept_weights_and_scales_macs() -> None:
    torch.manual_seed(0)
    model = Net()
    pruner = PMP(model, rate=0.75, exclude_last=False, include=["c*.weight", "fc.weight"])
    during = sparsity_report(model, None)  # parametrized: read through the band-stop, nonzero counts
    assert [l.name for l in during.layers] == ["c1.weight", "c2.weight", "fc.weight"]
    masks = pruner.finalize()
    r = sparsity_report(model, masks, torch.randn(B, 3, 10))
    for layer in r.layers:
        n = layer.numel
        assert layer.kept == n - round(0.75 * n) == int(masks[layer.name].sum())
        assert layer.macs == round(DENSE_MACS[layer.name] * layer.density)
    assert r.prunable_kept == sum(l.kept for l in r.layers)
    assert r.prunable_macs == sum(l.macs for l in r.layers)
    assert r.model_macs == r.model_macs_dense - (r.prunable_macs_dense - r.prunable_macs)
    others = sum(p.numel() for n, p in model.named_parameters() if n not in masks)
    assert r.total_kept == r.prunable_kept + others
    assert r.total_density == pytest.approx(r.total_kept / r.total_numel)
    # nonzero counting after finalisation agrees with the masks
    assert [l.kept for l in sparsity_report(model).layers] == [l.kept for l in r.layers]


def test_json_and_text() -> None:
    torch.manual_seed(0)
    model = Net()
    r = sparsity_report(model, None, (torch.randn(B, 3, 10),))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["layers"][0]["name"] == "c1.weight" and d["prunable_density"] == 1.0
    text = format_report(r)
    assert "fc.weight" in text and "all parameters" in text and text.count("\n") == len(r.layers) + 2
    assert json.loads(r.to_json()) == d
