"""TensorBoard logging of a run (`pmp train --tensorboard`, config `train.tensorboard: true`).

Why: people coming from CTR-GCN/PYSKL watch runs in TensorBoard. Event files go to
`<run>/tensorboard/`, next to the CSV log (which stays the record). Per epoch: the log row (loss,
penalty, train and test accuracy, lr), the achieved density (all prunable weights, and per layer),
PMP's sharpness and band edge, and histograms of the largest layer's latent weights and of its
prior (the prior as evenly spaced quantiles: the same shape every epoch, no random draw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pmp.pruning.base import Pruner

#: Quantiles drawn to show the prior's shape in the histogram tab.
PRIOR_POINTS = 4096


def effective_density(pruner: Pruner) -> dict[str, float]:
    """Per prunable tensor, the fraction of weights the network uses at half their latent
    magnitude or more: for masks the kept fraction, for PMP the weights outside the band-stop's
    band (where it passes ~1, inside ~0); 1.0 for a dense run."""
    out = {}
    with torch.no_grad():
        for t in pruner.targets:
            latent, eff = pruner.latent(t.name).detach(), pruner.effective(t.name).detach()
            out[t.name] = float(((eff.abs() >= 0.5 * latent.abs()) & (latent != 0)).float().mean())
    return out


class TensorBoardLog:
    """One run's TensorBoard writer; `log_epoch` after every epoch, `close` at the end."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(f"--tensorboard needs the optional dependency: pip install 'pmp[tensorboard]' ({e})") from e
        self.dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(str(self.dir))

    def log_epoch(self, epoch: int, row: dict[str, Any], pruner: Pruner) -> None:
        w = self.writer
        for key in ("loss", "penalty", "train_acc", "test_class_avg_acc", "lr"):
            if row.get(key) is not None:
                w.add_scalar(f"train/{key}", float(row[key]), epoch)
        density = effective_density(pruner)
        sizes = {t.name: t.numel for t in pruner.targets}
        total = sum(sizes.values())
        if total:
            w.add_scalar("density/achieved", sum(density[k] * sizes[k] for k in density) / total, epoch)
        for name, d in density.items():
            w.add_scalar(f"density/{name}", d, epoch)
        state = pruner.extra_state()
        if "sharpness" in state and "edges" in state:  # PMP's schedule: one value per group
            groups = [t.name for t in pruner.targets] if len(state["edges"]) == len(pruner.targets) else ["all"]
            for g, s, a in zip(groups, state["sharpness"], state["edges"]):
                w.add_scalar(f"pmp/sharpness/{g}", float(s), epoch)
                w.add_scalar(f"pmp/band_edge/{g}", float(a), epoch)
        if pruner.targets:
            target = max(pruner.targets, key=lambda t: t.numel)
            w.add_histogram(f"latent/{target.name}", pruner.latent(target.name).detach().flatten().cpu(), epoch)
            prior = getattr(pruner, "priors", {}).get(target.name)
            if prior is not None:
                p = (torch.arange(PRIOR_POINTS, dtype=torch.float64) + 0.5) / PRIOR_POINTS
                w.add_histogram(f"prior/{target.name}", prior.quantile(p).float(), epoch)
        w.flush()

    def close(self) -> None:
        self.writer.close()
