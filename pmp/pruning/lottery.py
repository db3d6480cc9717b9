"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin, 2019;
rewinding to an early iteration instead of the initialisation, Frankle et al., 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import LossFn, register_method
from .magnitude import MagnitudePruner

_REWIND = "rewind."  # extra_state prefix of the saved rewind weights


@register_method
class LotteryTicket(MagnitudePruner):
    """LTH: `rounds` prune-and-rewind rounds, then one more training run of the final ticket.

    Training is split into rounds + 1 equal runs (`phases`), each of the configured epochs
    (`epoch_multiplier` = rounds + 1) or, with `split_epochs`, of an equal share of them, so that
    LTH trains as many epochs as the other methods. At the end of run k <= rounds,
    the cumulative sparsity becomes 1 - (1 - rate)^(k / rounds), i.e. each round prunes
    p = 1 - (1 - rate)^(1/rounds) of what remains, by |W| (the last round uses the exact rate);
    survivors are rewound to the weights saved at `rewind_at` of the first run (0 = the
    initialisation) and the optimizer restarts. The last run trains the ticket at exactly the rate,
    so `finalize` changes nothing: the reported network is a trained ticket, not a freshly cut one.
    """

    name = "lth"

    def __init__(
        self, model: nn.Module, rate: float, *, rounds: int = 3, rewind_at: float = 0.05,
        split_epochs: bool = False, **kwargs: Any,
    ):
        if rounds < 1:
            raise ValueError(f"lth: rounds must be >= 1, got {rounds}")
        if not 0.0 <= rewind_at < 1.0:
            raise ValueError(f"lth: rewind_at must be in [0, 1), got {rewind_at}")
        super().__init__(model, rate, **kwargs)
        self.rounds = int(rounds)
        self.rewind_at = float(rewind_at)
        if not isinstance(split_epochs, bool):
            raise ValueError(f"lth: split_epochs must be true or false, got {split_epochs!r}")
        self.split_epochs = split_epochs
        self.phases = self.rounds + 1
        self.epoch_multiplier = 1 if split_epochs else self.phases
        self.round = 0  # prune-and-rewind rounds done
        self.rewind_state: dict[str, torch.Tensor] | None = None  # by the dense model's state_dict names

    def round_sparsity(self, k: int) -> float:
        """Cumulative sparsity after round k; the last round is exactly the rate."""
        return self.rate if k == self.rounds else 1.0 - (1.0 - self.rate) ** (k / self.rounds)

    def on_train_start(self, loss_fn: LossFn) -> None:
        self._save_if_due(0.0)

    def step(self, progress: float) -> bool:
        self.enforce_masks()
        self._save_if_due(progress)
        # tolerance: steps_done / total_steps may miss k / runs by an ulp at a round's last step
        if self.round < self.rounds and progress >= (self.round + 1) / self.phases - 1e-9:
            self.round += 1
            self.prune_to(self.round_sparsity(self.round))
            self._rewind()
            return True
        return False

    def _save_if_due(self, progress: float) -> None:
        # always within the first run, so before any mask: plain state_dict names
        if self.rewind_state is None and progress >= self.rewind_at / self.phases:
            self.rewind_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def _rewind(self) -> None:
        """Every parameter and buffer back to the saved values; pruned entries stay zero."""
        assert self.rewind_state is not None, "rewind point lies in the first run, before its end"
        live = dict(self.model.state_dict(keep_vars=True))  # untouched names for non-targets
        live.update({t.name: self.latent(t.name) for t in self.targets})
        for k, v in self.rewind_state.items():
            live[k].copy_(v)
        self.enforce_masks()

    def extra_state(self) -> dict[str, Any]:
        saved = {_REWIND + k: v for k, v in (self.rewind_state or {}).items()}
        return {**super().extra_state(), "round": self.round, **saved}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.round = int(state["round"])
        saved = {k[len(_REWIND) :]: v for k, v in state.items() if k.startswith(_REWIND)}
        self.rewind_state = saved or None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "rounds": self.rounds, "rewind_at": self.rewind_at,
            "split_epochs": self.split_epochs,
            "per_round_rate": 1.0 - (1.0 - self.rate) ** (1.0 / self.rounds),
        }
