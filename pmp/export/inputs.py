"""What evaluating an exported model needs: its run's data, prepared its way, checked against it.

A `.pmp` carries its run's model.json, which names the dataset with its loader options (a
synthetic seed, sizes) and split, and the preprocessing. `evaluation_inputs` uses those unless told
otherwise, and refuses data the model cannot have been trained for (another number of classes,
joints, channels or frames, or other class names): such a run would print a meaningless accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pmp.data import PreprocessConfig, SkeletonDataset, load_dataset, preprocess

from .format import ExportFormatError


@dataclass(frozen=True)
class EvalInputs:
    dataset: SkeletonDataset
    split_name: str
    x: torch.Tensor  # (N, T, V, C) preprocessed test sequences
    y: np.ndarray  # (N,) labels


def _section(path: Path, spec: dict[str, Any], key: str) -> dict[str, Any]:
    value = spec.get(key)
    if not isinstance(value, dict):
        raise ExportFormatError(f"{path}: config has no '{key}' section (needed to prepare the data); "
                                "re-export the run with this version of pmp")
    return value


def evaluation_inputs(path: str | Path, spec: dict[str, Any], dataset: str | None = None, data_root: str | None = None,
                split: str | None = None) -> EvalInputs:
    """The test split of the model's dataset (or `dataset`, with no loader options unless it is the
    run's own) as the model expects it; ExportFormatError/ValueError name what does not match."""
    path = Path(path)
    try:
        pre = PreprocessConfig(**_section(path, spec, "preprocess"))
    except (TypeError, ValueError) as e:
        raise ExportFormatError(f"{path}: config section 'preprocess' is invalid ({e})") from None
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}  # absent in exports before issue 14
    own = spec.get("dataset", data.get("name"))
    name = dataset or own
    if not isinstance(name, str):
        raise ExportFormatError(f"{path}: config names no dataset; pass --dataset")
    options = data.get("options", {}) if name == own else {}
    ds = load_dataset(name, data_root, **options)
    chosen = split or (data.get("split") if name == own else None)
    s = ds.split(chosen)
    x = preprocess(ds, pre)[torch.as_tensor(s.test)]
    kwargs = spec.get("kwargs", {})
    expected = {"classes": (kwargs.get("num_classes"), ds.num_classes), "joints": (kwargs.get("num_nodes"), x.shape[2]),
                "channels": (kwargs.get("in_channels"), x.shape[3]), "frames": (kwargs.get("in_frames"), x.shape[1])}
    wrong = [f"{k}: model {m}, data {d}" for k, (m, d) in expected.items() if m is not None and m != d]
    names = spec.get("class_names")
    if not wrong and isinstance(names, list) and names != list(ds.class_names):
        wrong.append("class names differ")
    if wrong:
        raise ValueError(f"{path} does not fit {ds.name} split {s.name} ({'; '.join(wrong)}): wrong dataset?")
    return EvalInputs(ds, s.name, x, ds.labels[s.test])
