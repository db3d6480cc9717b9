"""The generic `.npz` format: any skeleton dataset converted to plain numpy arrays (docs/data.md).

Fields: `x` (N, T, V, C) with optional `lengths` (N,), or per-sequence `x_0` .. `x_{N-1}` (T_i, V, C);
`y` (N,) ints; `split` (N,) "train"/"test" strings or integer fold ids; optional `class_names` (K,),
`edges` (E, 2), `flip_pairs` (P, 2) (one person's left/right joints; (0, 2) if mirroring renames
none), `layout` and `root_joint` scalars. Loaded with allow_pickle=False; every field is
checked and an error names it (and the sequence index).
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .base import LAYOUTS, DataFormatError, SkeletonDataset, Split, flip_pairs_problem, fold_splits, persons_of

OPTIONAL = {"lengths", "class_names", "edges", "flip_pairs", "layout", "root_joint"}
_PER_SEQUENCE = re.compile(r"x_(0|[1-9][0-9]*)")
Bad = Callable[[str, str], DataFormatError]  # (field, message) -> the error to raise
log = logging.getLogger(__name__)


def load_generic(path: str | Path) -> SkeletonDataset:
    """Load and validate a generic-format file; the dataset is named after the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: missing file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"{path}: not a readable .npz file: {e}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataFormatError(f"{path}: a single array, not an .npz archive of named fields")
    with npz:
        fields = {key: _array(path, npz, key) for key in npz.files}
    return dataset_from_fields(path, fields)


def _array(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # e.g. an object array, which needs pickle
        raise DataFormatError(f"{path}: field {key!r}: cannot be read: {e}") from None


def dataset_from_fields(path: Path, fields: dict[str, np.ndarray]) -> SkeletonDataset:
    """The dataset the generic format's `fields` describe, every field validated; errors name
    `path` and the field (the array-layout loaders in `arrays.py` end here too)."""
    def bad(field: str, msg: str) -> DataFormatError:
        return DataFormatError(f"{path}: field {field!r}: {msg}")

    per_seq = sorted((k for k in fields if _PER_SEQUENCE.fullmatch(k)), key=lambda k: int(k[2:]))
    unknown = set(fields) - {"x", "y", "split"} - OPTIONAL - set(per_seq)
    if unknown:
        raise bad(sorted(unknown)[0], f"unknown field (allowed: x or x_0.., y, split, {', '.join(sorted(OPTIONAL))})")
    for key in ("y", "split"):
        if key not in fields:
            raise bad(key, "missing")
    sequences = _sequences(fields, per_seq, bad)
    n = len(sequences)
    y = _ints(fields["y"], "y", (n,), bad)
    class_names = [str(c) for c in range(int(y.max()) + 1)]
    if "class_names" in fields:
        names = fields["class_names"]
        if names.ndim != 1 or names.dtype.kind != "U" or len(set(names.tolist())) != len(names):
            raise bad("class_names", "must be a 1-D array of distinct strings")
        class_names = names.tolist()
    outside = np.flatnonzero(y >= len(class_names))
    if len(outside) or y.min() < 0:
        i = int(outside[0]) if len(outside) else int(np.argmin(y))
        raise bad("y", f"sequence {i}: label {y[i]} outside the {len(class_names)} classes")
    v = sequences[0].shape[1]
    edges = None
    if "edges" in fields:
        e = _ints(fields["edges"], "edges", (-1, 2), bad)
        if len(e) and (e.min() < 0 or e.max() >= v):
            raise bad("edges", f"joint index outside 0..{v - 1}")
        edges = [(int(a), int(b)) for a, b in e]
    layout = _scalar(fields, "layout", "U", "generic", bad)
    if layout not in LAYOUTS:
        raise bad("layout", f"{layout!r} is not one of {LAYOUTS}")
    if layout == "two_person" and v % 2:
        raise bad("layout", f"two_person needs an even number of joints, got V={v}")
    root_joint = int(_scalar(fields, "root_joint", "iu", 0, bad))
    joints = v // persons_of(layout)
    if not 0 <= root_joint < joints:
        raise bad("root_joint", f"{root_joint} is not a joint of one person")
    flip_pairs = None
    if "flip_pairs" in fields:
        flip_pairs = [(int(a), int(b)) for a, b in _ints(fields["flip_pairs"], "flip_pairs", (-1, 2), bad)]
        problem = flip_pairs_problem(flip_pairs, joints)
        if problem:
            raise bad("flip_pairs", problem)
    splits = _splits(fields["split"], n, bad)
    _warn_if_suspicious(path, sequences, y, len(class_names), splits)
    return SkeletonDataset(
        name=path.stem,
        sequences=sequences,
        labels=y,
        class_names=class_names,
        splits=splits,
        layout=layout,
        sources=[f"{path}[{i}]" for i in range(n)],
        edges=edges,
        root_joint=root_joint,
        flip_pairs=flip_pairs,
    )


def _warn_if_suspicious(path: Path, sequences: list[np.ndarray], y: np.ndarray, classes: int,
                        splits: list[Split]) -> None:
    """Legal but probably wrong data: a warning naming the file, not an error (docs/guarantees.md)."""
    for s in splits:
        untrained = sorted(set(range(classes)) - set(y[s.train].tolist()))
        if untrained:
            log.warning("%s: split %s has no training sequence of class(es) %s", path, s.name, untrained[:10])
    still = [i for i, seq in enumerate(sequences) if np.ptp(seq, axis=0).max() == 0]
    if len(still) == len(sequences):
        log.warning("%s: every sequence is motionless (all frames equal)", path)


def _sequences(fields: dict[str, np.ndarray], per_seq: list[str], bad: Bad) -> list[np.ndarray]:
    """Either the padded `x` (+ `lengths`) or `x_0..x_{N-1}`; finite float64 (T_i, V, C) arrays."""
    if "x" in fields and per_seq:
        raise bad(per_seq[0], "give either 'x' or 'x_0'.., not both")
    if "x" in fields:
        x = fields["x"]
        if x.ndim != 4 or 0 in x.shape:
            raise bad("x", f"shape {x.shape}, expected (N, T, V, C) with no zero size")
        lengths = np.full(len(x), x.shape[1])
        if "lengths" in fields:
            lengths = _ints(fields["lengths"], "lengths", (len(x),), bad)
            wrong = np.flatnonzero((lengths < 1) | (lengths > x.shape[1]))
            if len(wrong):
                raise bad("lengths", f"sequence {wrong[0]}: length {lengths[wrong[0]]} outside 1..{x.shape[1]}")
        seqs = [("x", x[i, :t]) for i, t in enumerate(lengths)]  # padding past a length is ignored
    else:
        if not per_seq:
            raise bad("x", "missing (give 'x' or 'x_0'..'x_{N-1}')")
        if "lengths" in fields:
            raise bad("lengths", "only goes with a padded 'x'")
        for i, key in enumerate(per_seq):
            if key != f"x_{i}":
                raise bad(f"x_{i}", f"missing (found {key}; sequences are numbered from 0 without gaps)")
        seqs = [(key, fields[key]) for key in per_seq]
    shape = seqs[0][1].shape[1:]
    for i, (key, s) in enumerate(seqs):
        if s.dtype.kind not in "fiu":
            raise bad(key, f"sequence {i}: dtype {s.dtype} is not numeric")
        if s.ndim != 3 or 0 in s.shape or s.shape[1:] != shape:
            raise bad(key, f"sequence {i}: shape {s.shape}, expected (T>=1, V, C) with (V, C) = {shape}")
        finite = np.isfinite(s).all(axis=(1, 2))
        if not finite.all():
            raise bad(key, f"sequence {i}: NaN or inf at frame {int(np.argmin(finite))}")
    return [s.astype(np.float64) for _, s in seqs]


def _ints(a: np.ndarray, key: str, shape: tuple[int, ...], bad: Bad) -> np.ndarray:
    """An integer array of the given shape (-1: any size)."""
    if a.dtype.kind not in "iu":
        raise bad(key, f"dtype {a.dtype}, expected integers")
    if a.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, a.shape)):
        want = ", ".join("*" if d == -1 else str(d) for d in shape) + ("," if len(shape) == 1 else "")
        raise bad(key, f"shape {a.shape}, expected ({want})")
    return a.astype(np.int64)


def _scalar(fields: dict[str, np.ndarray], key: str, kinds: str, default: object, bad: Bad) -> object:
    if key not in fields:
        return default
    a = fields[key]
    if a.ndim != 0 or a.dtype.kind not in kinds:
        raise bad(key, f"expected a scalar of kind {kinds!r}, got dtype {a.dtype} shape {a.shape}")
    return a.item()


def _splits(split: np.ndarray, n: int, bad: Bad) -> list[Split]:
    """"train"/"test" strings -> one split "train/test"; integer fold ids -> one split per fold."""
    if split.ndim != 1 or len(split) != n:
        raise bad("split", f"shape {split.shape}, expected ({n},)")
    if split.dtype.kind == "U":
        wrong = np.flatnonzero((split != "train") & (split != "test"))
        if len(wrong):
            raise bad("split", f"sequence {wrong[0]}: {str(split[wrong[0]])!r} is neither 'train' nor 'test'")
        idx = np.arange(n)
        parts = idx[split == "train"], idx[split == "test"]
        if not all(len(p) for p in parts):
            raise bad("split", "needs both 'train' and 'test' sequences")
        return [Split("train/test", *parts)]
    folds = _ints(split, "split", (n,), bad)
    if len(np.unique(folds)) < 2:
        raise bad("split", "fold ids need at least two distinct folds")
    return fold_splits(folds)
