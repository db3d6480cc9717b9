"""Which parameters are prunable: one rule shared by every method, so budgets compare."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

#: Excluded by default. The last weight-bearing layer (the classifier) is excluded separately,
#: because its name is model-specific; see `select_targets(exclude_last=True)`.
DEFAULT_EXCLUDE: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """A prunable tensor: `module.<param>` reachable as `name` in `model.named_parameters()`."""

    name: str  # e.g. "fc.weight"
    module_name: str  # e.g. "fc"
    param: str  # e.g. "weight"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


def select_targets(
    model: nn.Module,
    include: list[str] | tuple[str, ...] | None = None,
    exclude: list[str] | tuple[str, ...] = DEFAULT_EXCLUDE,
    exclude_last: bool = True,
) -> list[Target]:
    """Prunable tensors of `model`, in registration order.

    Default rule: every parameter with 2+ dimensions (Linear/Conv weights, attention projections),
    never biases (1-D) or normalisation layers, and not the last such layer (the classifier: pruning
    it at 99% removes whole classes' evidence). `include`/`exclude` are fnmatch patterns over full
    parameter names ("fc.weight", "attn.*"); `include` overrides the default dimension rule.
    """
    candidates: list[Target] = []
    for module_name, module in model.named_modules():
        if _is_norm(module):
            continue
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if include is not None:
                if not any(fnmatch.fnmatch(full, pat) for pat in include):
                    continue
            elif p.dim() < 2:
                continue
            if any(fnmatch.fnmatch(full, pat) for pat in exclude):
                continue
            candidates.append(Target(full, module_name, pname, tuple(p.shape)))
    if exclude_last and include is None and len(candidates) > 1:
        candidates = candidates[:-1]
    if not candidates:
        raise ValueError("no prunable parameters matched (check include/exclude patterns)")
    return candidates


def get_module(model: nn.Module, module_name: str) -> nn.Module:
    return model.get_submodule(module_name) if module_name else model
