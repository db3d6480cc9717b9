"""Reading a multi-rate (mrmp) run at any rate it serves, during `finish()` and from its run folder.

An mrmp run folder holds, besides the usual files (model.safetensors: the network at the run's
headline rate), `latent.safetensors`: the finalized model's state with every pruned tensor's latent
(unmasked) weights and the BatchNorm statistics as training left them. The network at rate r is
that state with each target multiplied by its nested mask at r (top-k of |latent|), and, when the
run's `bn_recalibrate` is on, its BatchNorm statistics re-estimated on the training inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pmp.data import load_dataset, preprocess
from pmp.models import create_model
from pmp.pruning.mrmp import MRMP, nested_masks, recalibrate_batchnorm

from .checkpoint import save_tensors

LATENT = "latent.safetensors"
CALIBRATION_BATCH = 256


def calibration_batches(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """`x` in batches of CALIBRATION_BATCH on `model`'s device (the data stays on the CPU in training)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return [x[i : i + CALIBRATION_BATCH].to(device) for i in range(0, len(x), CALIBRATION_BATCH)]


@torch.no_grad()
def apply_rate(model: nn.Module, latent: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
               calibration: torch.Tensor | None) -> None:
    """Load `latent` into `model`, zero every target outside its mask, and recalibrate BatchNorm on
    `calibration` inputs (None: keep the training statistics)."""
    model.load_state_dict(latent)
    for name, mask in masks.items():
        w = model.get_parameter(name)
        w.mul_(mask.to(w.device, w.dtype))
    if calibration is not None:
        recalibrate_batchnorm(model, calibration_batches(model, calibration))


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def serve_rates(pruner: MRMP, model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                num_classes: int, run_dir: Path) -> dict[str, dict[str, Any]]:
    """After `pruner.finalize()`: write latent.safetensors, evaluate the network at every rate of
    `pruner.eval_rates`, and leave `model` at the pruner's rate. Returns {"0.9": metrics, ...}."""
    from .trainer import evaluate  # the trainer imports this module

    latent = {**model.state_dict(), **pruner.latent_weights()}
    save_tensors(latent, run_dir / LATENT)
    calibration = x_train if pruner.bn_recalibrate else None
    options = pruner.describe()
    out: dict[str, dict[str, Any]] = {}
    for rate in pruner.eval_rates:
        masks = pruner.masks_at(rate)
        apply_rate(model, latent, masks, calibration)
        m = evaluate(model, x_test, y_test, num_classes)
        pruned = sum(int((~v).sum()) for v in masks.values())
        out[_rate_key(rate)] = {
            "rate": rate, "seen": _seen(options, rate), "class_avg_acc": m.class_avg_acc,
            "overall_acc": m.overall_acc, "pruned": pruned, "exact_count": pruned == _expected(masks, rate, pruner.scope),
        }
    apply_rate(model, latent, pruner.finalize(), calibration)
    return out


def _seen(options: dict[str, Any], rate: float) -> bool:
    """Whether `rate` was trained: one of the training rates, or anywhere in a trained range."""
    if options.get("rate_range"):
        return True
    return any(abs(rate - r) < 1e-9 for r in options["rates"])


def _expected(masks: dict[str, torch.Tensor], rate: float, scope: str) -> int:
    """round(r N) per tensor, or over all tensors for scope="global"."""
    if scope == "global":
        return round(rate * sum(m.numel() for m in masks.values()))
    return sum(round(rate * m.numel()) for m in masks.values())


def model_at_rate(run_dir: str | Path, rate: float, data_root: str | None = None
                  ) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """The network of a finished mrmp run at `rate` (in its trained range): (model in eval mode,
    masks, model spec with "rate" set to `rate`). Loads the training data only to recalibrate."""
    from safetensors.torch import load_file

    from .config import load_config

    run = Path(run_dir)
    metrics_path, latent_path = run / "metrics.json", run / LATENT
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: missing (is {run} a finished run folder?)")
    metrics = json.loads(metrics_path.read_text())
    options = metrics.get("method_options") or {}
    if metrics.get("method") != MRMP.name or not latent_path.is_file():
        raise ValueError(f"{run}: --rate needs a multi-rate (mrmp) run with {LATENT}; this run's method is "
                         f"{metrics.get('method')!r}")
    lo, hi = options["served_range"]
    if not lo - 1e-9 <= rate <= hi + 1e-9:
        raise ValueError(f"{run}: rate {rate:g} is outside the run's trained range [{lo:g}, {hi:g}]")
    spec = json.loads((run / "model.json").read_text())
    latent = load_file(str(latent_path))
    targets = list(load_file(str(run / "masks.safetensors")))
    masks = nested_masks({n: latent[n] for n in targets}, rate, options["scope"])
    calibration = None
    if options.get("bn_recalibrate"):
        cfg = load_config(run / "config.yaml")
        ds = load_dataset(cfg.data.name, data_root or cfg.data.root, **cfg.data.options)
        calibration = preprocess(ds, cfg.preprocess)[torch.as_tensor(ds.split(cfg.data.split).train)]
    model = create_model(spec["model"], **spec["kwargs"])
    apply_rate(model, latent, masks, calibration)
    return model.eval(), masks, {**spec, "rate": rate}

