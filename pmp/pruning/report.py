"""What a pruned model costs: per-layer density, totals, and multiply-accumulates.

Model-agnostic: parameters are read through any parametrization (so it works during training as
well as after `finalize()`), and MACs are counted on an example input, by forward hooks on every
Linear/Conv layer and by `torch.utils.flop_counter` for the whole model (matmuls outside modules,
such as attention products, included). A layer's effective MACs are its dense MACs x its density:
what an unstructured-sparse kernel would execute.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerStats:
    name: str
    shape: list[int]
    numel: int
    kept: int
    density: float
    macs_dense: int | None = None  # per example input; None without an input or for non-Linear/Conv
    macs: int | None = None


@dataclass
class SparsityReport:
    layers: list[LayerStats]
    prunable_numel: int
    prunable_kept: int
    total_numel: int  # every parameter, prunable or not
    total_kept: int
    prunable_macs_dense: int | None = None  # the rows' Linear/Conv layers, per example input batch
    prunable_macs: int | None = None
    model_macs_dense: int | None = None  # the whole forward pass, per example input batch
    model_macs: int | None = None

    @property
    def prunable_density(self) -> float:
        return self.prunable_kept / max(self.prunable_numel, 1)

    @property
    def total_density(self) -> float:
        return self.total_kept / max(self.total_numel, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: ints, floats, strings, lists and dicts only."""
        d = asdict(self)
        d["prunable_density"], d["total_density"] = self.prunable_density, self.total_density
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def logical_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by the name the model computes with ("fc.weight"), through any parametrization."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, parametrize.ParametrizationList):
                continue  # holds the latent `original`, reported under the parametrized name
            names = [n for n, _ in module.named_parameters(recurse=False)]
            if parametrize.is_parametrized(module):
                names += list(module.parametrizations.keys())
            for n in names:
                out[f"{module_name}.{n}" if module_name else n] = getattr(module, n).detach()
    return out


def _layer_macs(model: nn.Module, inputs: tuple[Any, ...]) -> tuple[dict[str, int], int]:
    """Dense MACs of each Linear/Conv weight (by hooks) and of the whole forward (flop counter)."""
    macs: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            w = module.weight
            per_output = w.shape[1] if isinstance(module, nn.Linear) else w[0].numel()  # in_ch/groups * kernel
            macs[name] = macs.get(name, 0) + output.numel() * per_output

        return fn

    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            name = f"{module_name}.weight" if module_name else "weight"
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs, counter.get_total_flops() // 2


def sparsity_report(
    model: nn.Module, masks: dict[str, torch.Tensor] | None = None, input_example: Any = None
) -> SparsityReport:
    """Per-layer and total sparsity, and MACs when `input_example` (a tensor or a tuple) is given.

    Rows: the masked tensors when `masks` is given (kept = mask count), else every parameter with
    2+ dimensions (kept = nonzero count). Other parameters count as dense in the totals."""
    params = logical_parameters(model)
    if masks is not None:
        kept = {k: int(m.sum()) for k, m in masks.items()}
    else:
        kept = {k: int(torch.count_nonzero(p)) for k, p in params.items() if p.dim() >= 2}
    layers = [LayerStats(k, list(params[k].shape), params[k].numel(), n, n / max(params[k].numel(), 1)) for k, n in kept.items()]
    report = SparsityReport(
        layers=layers,
        prunable_numel=sum(r.numel for r in layers),
        prunable_kept=sum(r.kept for r in layers),
        total_numel=sum(p.numel() for p in params.values()),
        total_kept=sum(kept.get(k, p.numel()) for k, p in params.items()),
    )
    if input_example is not None:
        inputs = input_example if isinstance(input_example, tuple) else (input_example,)
        layer_macs, model_macs = _layer_macs(model, inputs)
        counted = [r for r in layers if r.name in layer_macs]
        for r in counted:
            r.macs_dense = layer_macs[r.name]
            r.macs = round(r.macs_dense * r.density)
        report.prunable_macs_dense = sum(r.macs_dense for r in counted)
        report.prunable_macs = sum(r.macs for r in counted)
        report.model_macs_dense = model_macs
        report.model_macs = model_macs - (report.prunable_macs_dense - report.prunable_macs)
    return report


def format_report(report: SparsityReport) -> str:
    """A fixed-width text table, one row per prunable tensor, then the totals."""
    width = max([len("all parameters")] + [len(r.name) for r in report.layers])

    def row(name: str, shape: str, numel: int, kept: int, density: float, dense: int | None, eff: int | None) -> str:
        macs = "" if dense is None or eff is None else f"{eff:>13,} / {dense:,}"
        return f"{name:<{width}}  {shape:<16} {numel:>11,} {kept:>11,} {density:>8.4f}  {macs}"

    header = f"{'layer':<{width}}  {'shape':<16} {'numel':>11} {'kept':>11} {'density':>8}  MACs kept / dense"
    lines = [header]
    lines += [row(r.name, "x".join(map(str, r.shape)), r.numel, r.kept, r.density, r.macs_dense, r.macs) for r in report.layers]
    lines.append(row("prunable", "", report.prunable_numel, report.prunable_kept, report.prunable_density,
                     report.prunable_macs_dense, report.prunable_macs))
    lines.append(row("all parameters", "", report.total_numel, report.total_kept, report.total_density,
                     report.model_macs_dense, report.model_macs))
    return "\n".join(lines)
