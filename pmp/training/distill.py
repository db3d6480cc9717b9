"""Knowledge distillation from a finished run (`train.teacher`): the teacher's softened outputs on
the training split become a second target of the loss.

Why: on a few hundred sequences a network's own labels say little beyond the class; a stronger
network of another family (e.g. DD-Net on SBU, docs/backbones/ddnet.md) knows which classes a
sequence resembles, and passing that on is the standard way to lift a deployable network toward
it without changing the network (Hinton et al. 2015; NNCF distils while it compresses). The
teacher runs once per run, on the unaugmented training sequences in its own preprocessing, so its
targets cost one forward pass, not one per step; each augmented view learns toward its sequence's
targets. A teacher trained on another dataset or split is refused: a split's test sequences must
never reach its student through the teacher.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from pmp.data import preprocess
from pmp.data.preprocess import PreprocessConfig

from .checkpoint import IntegrityError
from .config import ConfigError, ExperimentConfig

if TYPE_CHECKING:
    from .trainer import SplitData


def teacher_dir(cfg: ExperimentConfig) -> Path:
    """`train.teacher` with `{split}` and `{seed}` replaced by the run's, the split spelled as run
    folder names spell it (FPHA's "1:1" as 1-1): one config, one teacher per fold."""
    from pmp.experiments.grid import id_part  # no pmp imports of its own: no cycle

    try:
        return Path(str(cfg.train.teacher).format(split=id_part(cfg.data.split), seed=cfg.train.seed)).expanduser()
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"train.teacher: {cfg.train.teacher!r}: only {{split}} and {{seed}} may be filled in ({e})") from None


def teacher_targets(cfg: ExperimentConfig, data: SplitData) -> tuple[torch.Tensor, str]:
    """The teacher's logits (N_train, classes) on the run's training sequences (`data`, the split the
    run already loaded), in their order, and the sha256 of its weights (metrics.json records which
    teacher a run learned from)."""
    from .trainer import load_trained_model  # the trainer imports this module

    split = data.split.name
    folder = teacher_dir(cfg)
    if not (folder / "metrics.json").is_file():
        raise ConfigError(f"train.teacher: {folder}: not a finished run folder (train the teacher first)")
    try:
        model, spec = load_trained_model(folder)
    except (FileNotFoundError, IntegrityError) as e:
        raise ConfigError(f"train.teacher: {e}") from None
    seen = spec.get("data", {})
    if seen.get("name") != cfg.data.name or str(seen.get("split")) != split \
            or seen.get("options", {}) != cfg.data.options:
        raise ConfigError(f"train.teacher: {folder} was trained on "
                          f"{_data_label(seen.get('name'), seen.get('split'), seen.get('options'))}, this run on "
                          f"{_data_label(cfg.data.name, split, cfg.data.options)}: a teacher must have seen the "
                          "student's training split only")
    known = {f.name for f in fields(PreprocessConfig)}
    pre = PreprocessConfig(**{k: v for k, v in spec["preprocess"].items() if k in known})
    # the student's own inputs when the preprocessing is the same; else the teacher's, computed
    # like split_data's (the whole dataset, then the train rows)
    x = data.x_train if pre == cfg.preprocess else preprocess(data.dataset, pre)[torch.as_tensor(data.split.train)]
    with torch.no_grad():
        logits = torch.cat([model(part) for part in x.split(256)])
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return logits, digest


def _data_label(name: object, split: object, options: object) -> str:
    return f"{name!r} split {split!r}" + (f" (options {options})" if options else "")


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(teacher || student) of the outputs softened by `temperature` (the T^2 keeps the
    gradient's scale independent of T)."""
    t = temperature
    return nn.functional.kl_div(torch.log_softmax(logits / t, dim=1), torch.log_softmax(teacher / t, dim=1),
                                reduction="batchmean", log_target=True) * t * t
