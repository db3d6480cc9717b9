"""The one small interface every pruning method implements, and the method registry.

A training loop drives any method with four calls::

    pruner = create_pruner("pmp", model, rate=0.98)
    pruner.on_train_start(loss_fn)            # once; SNIP needs a gradient at initialisation
    loss = pruner.task_loss(lambda: task_loss(model(x), y))   # mrmp: averaged over several rates
    loss = loss + pruner.penalty()            # every step (zero for most methods)
    loss.backward(); opt.step()
    if pruner.step(progress):                 # after every optimizer step, progress in [0, 1]
        opt = make_optimizer()                # True: weights were rewound, reset optimizer state
    masks = pruner.finalize()                 # hard masks, exactly round(rate * N) zeros

After `finalize()` the model is a plain `nn.Module` whose pruned weights are exactly zero.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from .masks import FixedMask, topk_masks
from .targets import Target, get_module, select_targets

LossFn = Callable[[], torch.Tensor]


class Pruner:
    """Base class: target selection, mask bookkeeping, finalisation. Subclasses override hooks."""

    name: ClassVar[str] = "base"
    #: Training length relative to the configured epochs (iterative methods such as LTH cost more).
    epoch_multiplier: int = 1
    #: Trainings the run is split into; the optimizer and the LR schedule restart in each (LTH's rounds).
    phases: int = 1

    def __init__(
        self,
        model: nn.Module,
        rate: float,
        scope: str = "layer",
        include: list[str] | None = None,
        exclude: list[str] | tuple[str, ...] = (),
        exclude_last: bool = True,
    ):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"pruning rate must be in [0, 1), got {rate}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        self.model = model
        self.rate = float(rate)
        self.scope = scope
        self.targets: list[Target] = select_targets(model, include, exclude, exclude_last)
        self.masks: dict[str, torch.Tensor] | None = None  # fixed masks, once a method has chosen them
        self.finalized = False

    # ----------------------------------------------------------------- hooks (override as needed)
    def on_train_start(self, loss_fn: LossFn) -> None:
        """Called once before the first step with a closure computing the loss on a training batch."""

    def task_loss(self, loss_fn: Callable[[], Any]) -> Any:
        """The step's task loss from `loss_fn` (one forward pass on the batch): called once here;
        multi-rate methods call it once per rate and average (see mrmp.py)."""
        return loss_fn()

    def penalty(self) -> torch.Tensor:
        """Extra loss term added to the task loss."""
        return torch.zeros(())

    def step(self, progress: float) -> bool:
        """After each optimizer step. Returns True when weights were rewound (reset the optimizer)."""
        self.enforce_masks()
        return False

    def final_scores(self) -> dict[str, torch.Tensor]:
        """Scores whose exact top-k gives the final masks (default: the current masks, else |W|)."""
        scores = {t.name: self.latent(t.name).detach().abs().float() for t in self.targets}
        if self.masks is not None:  # kept entries first, then by magnitude within each group
            return {k: self.masks[k].float() * (1.0 + float(s.max())) + s for k, s in scores.items()}
        return scores

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state for checkpoints: tensors or JSON-able values."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """Resolved options, written into the run's results so the budget and schedule are on record."""
        return {
            "method": self.name, "rate": self.rate, "scope": self.scope, "epoch_multiplier": self.epoch_multiplier,
            "phases": self.phases,
        }

    # ----------------------------------------------------------------- shared machinery
    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def module_of(self, name: str) -> nn.Module:
        return get_module(self.model, self.target(name).module_name)

    def latent(self, name: str) -> torch.Tensor:
        """The trained tensor behind `name` (the original if parametrized)."""
        t = self.target(name)
        module = get_module(self.model, t.module_name)
        if parametrize.is_parametrized(module, t.param):
            return getattr(module.parametrizations, t.param).original
        return getattr(module, t.param)

    def effective(self, name: str) -> torch.Tensor:
        """The tensor the network computes with (latent through any parametrization)."""
        t = self.target(name)
        return getattr(get_module(self.model, t.module_name), t.param)

    def numel(self) -> int:
        return sum(t.numel for t in self.targets)

    def compute_masks(self, scores: dict[str, torch.Tensor], rate: float | None = None) -> dict[str, torch.Tensor]:
        return topk_masks(scores, self.rate if rate is None else rate, self.scope)

    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Fix the masks: a FixedMask parametrization on each target, latent zeroed where pruned."""
        for t in self.targets:
            module = get_module(self.model, t.module_name)
            mask = masks[t.name].to(self.latent(t.name).device)
            if parametrize.is_parametrized(module, t.param):
                plist = getattr(module.parametrizations, t.param)
                fixed = [p for p in plist if isinstance(p, FixedMask)]
                if fixed:
                    fixed[0].mask.copy_(mask)
                else:
                    parametrize.register_parametrization(module, t.param, FixedMask(mask))
            else:
                parametrize.register_parametrization(module, t.param, FixedMask(mask))
        self.masks = {k: v.clone() for k, v in masks.items()}
        self.enforce_masks()

    @torch.no_grad()
    def enforce_masks(self) -> None:
        """Zero pruned entries of the latent tensors, so the stored weights are zero too."""
        if self.masks is None:
            return
        for name, mask in self.masks.items():
            self.latent(name).mul_(mask.to(self.latent(name).dtype))

    @torch.no_grad()
    def finalize(self) -> dict[str, torch.Tensor]:
        """Hard masks with exactly round(rate * N) zeros over the scope; bakes them into plain weights."""
        masks = self.compute_masks(self.final_scores())
        for t in self.targets:
            module = get_module(self.model, t.module_name)
            latent = self.latent(t.name).detach().clone()
            if parametrize.is_parametrized(module, t.param):
                parametrize.remove_parametrizations(module, t.param, leave_parametrized=False)
            getattr(module, t.param).copy_(latent * masks[t.name].to(latent.dtype))
        self.masks = masks
        self.finalized = True
        return masks

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"method": self.name, "rate": self.rate, "scope": self.scope,
                                 "finalized": self.finalized}
        if self.masks is not None:
            state.update({f"mask.{k}": v for k, v in self.masks.items()})
        state.update({f"extra.{k}": v for k, v in self.extra_state().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore before `model.load_state_dict`, so parametrizations exist when weights load."""
        if state.get("method") != self.name:
            raise ValueError(f"checkpoint is for method {state.get('method')!r}, not {self.name!r}")
        masks = {k[5:]: v.to(torch.bool) for k, v in state.items() if k.startswith("mask.")}
        self.load_extra_state({k[6:]: v for k, v in state.items() if k.startswith("extra.")})
        if state.get("finalized"):  # masks are baked into plain weights: nothing to re-attach
            self.masks, self.finalized = masks, True
        elif masks:
            self.set_masks(masks)


class Dense(Pruner):
    """No pruning: the reference every method is compared with (rate 0)."""

    name = "dense"

    def __init__(self, model: nn.Module, rate: float = 0.0, **kwargs: Any):
        super().__init__(model, 0.0, **kwargs)


METHODS: dict[str, type[Pruner]] = {}


def register_method(cls: type[Pruner]) -> type[Pruner]:
    METHODS[cls.name] = cls
    return cls


register_method(Dense)


def create_pruner(method: str, model: nn.Module, rate: float, **options: Any) -> Pruner:
    """Build a pruning method by its CLI name ("dense", "pmp", "mrmp", "mp", "gmp", "lth", "snip")."""
    if method not in METHODS:
        raise KeyError(f"unknown pruning method {method!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[method](model, rate, **options)
