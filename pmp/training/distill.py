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

import torch
from torch import nn

from pmp.data import load_dataset, preprocess
from pmp.data.preprocess import PreprocessConfig

from .checkpoint import IntegrityError
from .config import ConfigError, ExperimentConfig


def teacher_dir(cfg: ExperimentConfig) -> Path:
    """`train.teacher` with `{split}` and `{seed}` replaced by the run's, the split spelled as run
    folder names spell it (FPHA's "1:1" as 1-1): one config, one teacher per fold."""
    from pmp.experiments.grid import id_part  # no pmp imports of its own: no cycle

    try:
        return Path(str(cfg.train.teacher).format(split=id_part(cfg.data.split), seed=cfg.train.seed)).expanduser()
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"train.teacher: {cfg.train.teacher!r}: only {{split}} and {{seed}} may be filled in ({e})") from None


def teacher_targets(cfg: ExperimentConfig, split: str, train_index: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The teacher's logits (N_train, classes) on the run's training sequences, in their order, and
    the sha256 of its weights (metrics.json records which teacher a run learned from)."""
    from .trainer import load_trained_model  # the trainer imports this module

    folder = teacher_dir(cfg)
    if not (folder / "metrics.json").is_file():
        raise ConfigError(f"train.teacher: {folder}: not a finished run folder (train the teacher first)")
    try:
        model, spec = load_trained_model(folder)
    except (FileNotFoundError, IntegrityError) as e:
        raise ConfigError(f"train.teacher: {e}") from None
    data = spec.get("data", {})
    if data.get("name") != cfg.data.name or str(data.get("split")) != split \
            or data.get("options", {}) != cfg.data.options:
        raise ConfigError(f"train.teacher: {folder} was trained on "
                          f"{_data_label(data.get('name'), data.get('split'), data.get('options'))}, this run on "
                          f"{_data_label(cfg.data.name, split, cfg.data.options)}: a teacher must have seen the "
                          "student's training split only")
    known = {f.name for f in fields(PreprocessConfig)}
    pre = PreprocessConfig(**{k: v for k, v in spec["preprocess"].items() if k in known})
    ds = load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    x = preprocess(ds, pre)[train_index]
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
