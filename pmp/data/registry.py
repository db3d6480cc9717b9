"""`load_dataset`: one entry point from a dataset name (or a generic .npz path) to a SkeletonDataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .arrays import is_ctrgcn_npz, load_ctrgcn_npz, load_stgcn_npy
from .base import DataFormatError, SkeletonDataset
from .fpha import SPLIT_FILE, load_fpha
from .generic import load_generic
from .sbu import load_sbu
from .synthetic import make_synthetic

ENV_VAR = "PMP_DATA_ROOT"
# A file or folder that marks each real dataset's own folder.
_MARKERS = {"sbu": "SBU", "fpha": SPLIT_FILE}


def resolve_data_root(root: str | os.PathLike[str] | None = None, dataset: str | None = None) -> Path:
    """The data folder: explicit `root` > env PMP_DATA_ROOT > error naming both.

    With `dataset` ("sbu"/"fpha"), `root` may be the folder that holds sbu/ and fpha/ or the
    dataset folder itself; the dataset's own folder is returned."""
    if root is None:
        root = os.environ.get(ENV_VAR)
    if not root:
        raise DataFormatError(f"no data root: pass --data-root (root=...) or set the env variable {ENV_VAR}")
    root = Path(root).expanduser()
    how = f"(set it with --data-root or the env variable {ENV_VAR})"
    if not root.is_dir():
        raise DataFormatError(f"{root}: data root folder not found {how}")
    if dataset is None:
        return root
    marker = _MARKERS[dataset]
    for folder in (root, root / dataset):
        if (folder / marker).exists():
            return folder
    raise DataFormatError(f"{root}: neither it nor {root / dataset} holds {dataset}'s {marker} {how}")


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, **options: Any) -> SkeletonDataset:
    """name: "sbu", "fpha", "synthetic" (options: seed, num_sequences, min_frames, max_frames,
    noise), the path of a generic-format .npz file, of a CTR-GCN-style .npz (options: persons,
    channels) or of ST-GCN-style .npy arrays (options: labels, test_data, test_labels; see
    `pmp.data.arrays`). `root` (or PMP_DATA_ROOT) locates sbu/fpha."""
    if name == "synthetic":
        return make_synthetic(**options)
    if name == "sbu":
        return load_sbu(resolve_data_root(root, "sbu"), **options)
    if name == "fpha":
        return load_fpha(resolve_data_root(root, "fpha"), **options)
    if name.endswith(".npy"):
        return load_stgcn_npy(name, **options)
    if name.endswith(".npz") and is_ctrgcn_npz(Path(name)):
        return load_ctrgcn_npz(name, **options)
    if name.endswith(".npz") or Path(name).is_file():
        if options:
            raise TypeError(f"generic .npz datasets take no options, got {sorted(options)}")
        return load_generic(name)
    raise ValueError(f"unknown dataset {name!r}: use sbu, fpha, synthetic or a path to a .npz or .npy file")
