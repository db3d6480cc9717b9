"""The skeleton field's common array layouts, read as they are (no conversion step).

- CTR-GCN style `.npz`: `x_train`/`x_test` of shape (N, T, M*V*C) (persons, then joints, then
  coordinates along the last axis) and one-hot `y_train`/`y_test` (N, K) (integer (N,) labels are
  accepted too). M, V, C cannot be read off the file: `persons` (default 2) and `channels`
  (default 3) are options, V follows.
- ST-GCN style `.npy`: data (N, C, T, V, M) with a label file that is JSON (a list of N integer
  labels, or {"labels": [...], "class_names": [...]}) or text (one integer label per line). The
  ST-GCN releases' labels are pickles, which pmp never loads (unpickling runs code): they are
  refused with the one-line conversion to JSON. By default the files are found by ST-GCN's names:
  `train_data.npy` -> `train_label.{json,txt}`, and the test side `val_data.npy` + `val_label.*`.

Both pad sequences to a fixed T with zero frames: trailing all-zero frames are trimmed (a
sequence with no non-zero frame is an error); an absent second person stays all zeros. Neither
layout records which joints are left and right: the option `flip_pairs` (e.g. NTU's 25 joints:
[[4, 8], [5, 9], [6, 10], [7, 11], [12, 16], [13, 17], [14, 18], [15, 19], [21, 23], [22, 24]])
declares them for the flip augmentation. The result
goes through the generic format's validation (`pmp.data.generic`), so the same checks apply and
errors name the file, field and sequence. Arrays are memory-mapped (NTU's are gigabytes).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .base import DataFormatError, SkeletonDataset
from .generic import dataset_from_fields

CTRGCN_FIELDS = ("x_train", "y_train", "x_test", "y_test")
PICKLE_SUFFIXES = (".pkl", ".pickle")
_CONVERT = ("convert it once, where you trust the file, with: python -c \"import pickle, json; "
            "names, labels = pickle.load(open('{src}', 'rb')); json.dump([int(l) for l in labels], "
            "open('{dst}', 'w'))\" and pass the .json file")


def is_ctrgcn_npz(path: Path) -> bool:
    """Whether an .npz file holds CTR-GCN's fields rather than the generic format's."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "x_train" in npz.files
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError):
        return False  # the generic loader reports what is wrong with the file


def _trimmed(path: Path, field: str, x: np.ndarray) -> list[np.ndarray]:
    """(N, T, V, C) padded sequences -> float64 (T_i, V, C) arrays without trailing all-zero frames."""
    if x.dtype.kind not in "fiu":
        raise DataFormatError(f"{path}: field {field!r}: dtype {x.dtype} is not numeric")
    out = []
    for i in range(len(x)):
        s = np.asarray(x[i], np.float64)
        if not np.isfinite(s).all():
            frame = int(np.argmin(np.isfinite(s).all(axis=(1, 2))))
            raise DataFormatError(f"{path}: field {field!r}: sequence {i}: NaN or inf at frame {frame}")
        nonzero = np.flatnonzero(np.abs(s).sum(axis=(1, 2)) > 0)
        if not len(nonzero):
            raise DataFormatError(f"{path}: field {field!r}: sequence {i}: every frame is zero (padding only)")
        out.append(s[: nonzero[-1] + 1])
    return out


def _labels(path: Path, field: str, y: np.ndarray, n: int) -> tuple[np.ndarray, int | None]:
    """Integer labels from one-hot (N, K) rows or an (N,) integer array; K when one-hot."""
    if y.ndim == 2 and y.shape[0] == n and y.dtype.kind in "fiub":
        wrong = np.flatnonzero(~(np.isin(y, (0, 1)).all(axis=1) & (y.sum(axis=1) == 1)))
        if len(wrong):
            raise DataFormatError(f"{path}: field {field!r}: sequence {wrong[0]}: {y[wrong[0]].tolist()[:8]} is not "
                                  "a one-hot row")
        return y.argmax(axis=1).astype(np.int64), y.shape[1]
    if y.ndim == 1 and y.dtype.kind in "iu" and len(y) == n:
        return y.astype(np.int64), None
    raise DataFormatError(f"{path}: field {field!r}: shape {y.shape} dtype {y.dtype}, expected one-hot (N={n}, K) "
                          f"or ({n},) integer labels")


def _fields(path: Path, parts: list[tuple[str, list[np.ndarray], np.ndarray]], persons: int,
            class_names: list[str] | None, num_classes: int | None,
            flip_pairs: list[list[int]] | None = None) -> SkeletonDataset:
    """The generic format's fields from train/test parts, validated by the generic loader.
    `flip_pairs` (the loaders' option): one person's left/right joints, as the generic field."""
    seqs = [s for _, part, _ in parts for s in part]
    fields: dict[str, np.ndarray] = {f"x_{i}": s for i, s in enumerate(seqs)}
    fields["y"] = np.concatenate([y for _, _, y in parts])
    fields["split"] = np.array([name for name, part, _ in parts for _ in part])
    fields["layout"] = np.array("two_person" if persons == 2 else "generic")
    if class_names is None and num_classes is not None:
        class_names = [str(k) for k in range(num_classes)]
    if class_names is not None:
        fields["class_names"] = np.array(class_names, dtype=str)
    if flip_pairs is not None:
        try:  # the generic loader checks the shape and joints and names the field
            fields["flip_pairs"] = np.array(flip_pairs) if len(flip_pairs) else np.zeros((0, 2), np.int64)
        except ValueError as e:  # ragged
            raise DataFormatError(f"{path}: option 'flip_pairs': {e}") from None
    return dataset_from_fields(path, fields)


def load_ctrgcn_npz(path: str | Path, persons: int = 2, channels: int = 3,
                    flip_pairs: list[list[int]] | None = None) -> SkeletonDataset:
    """A CTR-GCN-style .npz: x_train/x_test (N, T, M*V*C), one-hot y_train/y_test; split "train/test"."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"{path}: not a readable .npz file: {e}") from None
    with npz:
        unknown = sorted(set(npz.files) - set(CTRGCN_FIELDS))
        if unknown:
            raise DataFormatError(f"{path}: field {unknown[0]!r}: unknown field (a CTR-GCN-style file has "
                                  f"{', '.join(CTRGCN_FIELDS)})")
        missing = [f for f in CTRGCN_FIELDS if f not in npz.files]
        if missing:
            raise DataFormatError(f"{path}: field {missing[0]!r}: missing")
        arrays = {k: _read(path, npz, k) for k in CTRGCN_FIELDS}
    parts, num_classes = [], None
    for side in ("train", "test"):
        x = arrays[f"x_{side}"]
        if x.ndim != 3 or 0 in x.shape or x.shape[2] % (persons * channels):
            raise DataFormatError(f"{path}: field 'x_{side}': shape {x.shape}, expected (N, T, M*V*C) with "
                                  f"M={persons} persons and C={channels} channels (options persons, channels)")
        n, t, width = x.shape
        joints = width // (persons * channels)
        y, k = _labels(path, f"y_{side}", arrays[f"y_{side}"], n)
        if k is not None and num_classes is not None and k != num_classes:
            raise DataFormatError(f"{path}: field 'y_{side}': {k} classes, but y_train has {num_classes}")
        num_classes = k if k is not None else num_classes
        seqs = _trimmed(path, f"x_{side}", x.reshape(n, t, persons * joints, channels))
        parts.append((side, seqs, y))
    return _fields(path, parts, persons, None, num_classes, flip_pairs)


def _read(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # e.g. an object array, which needs pickle
        raise DataFormatError(f"{path}: field {key!r}: cannot be read: {e}") from None


def read_label_file(path: Path, n: int) -> tuple[np.ndarray, list[str] | None]:
    """N integer labels (and class names, if the JSON gives them) from a JSON or text file; pickles
    are refused, by suffix or by content."""
    if not path.is_file():
        raise DataFormatError(f"{path}: missing label file")
    raw = path.read_bytes()
    if path.suffix in PICKLE_SUFFIXES or raw[:1] == b"\x80":  # protocol 2+ pickles start with PROTO
        raise DataFormatError(f"{path}: a pickled label file, which pmp never loads (unpickling can run code); "
                              + _CONVERT.format(src=path, dst=path.with_suffix(".json")))
    names = None
    if path.suffix == ".json":
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{path}: invalid JSON: {e}") from None
        if isinstance(doc, dict):
            unknown = sorted(set(doc) - {"labels", "class_names"})
            if unknown or "labels" not in doc:
                raise DataFormatError(f"{path}: expected a list of labels or {{\"labels\": [...], \"class_names\": "
                                      f"[...]}}, got keys {sorted(doc)}")
            names = doc.get("class_names")
            if not (isinstance(names, list) and all(isinstance(c, str) for c in names)) and names is not None:
                raise DataFormatError(f"{path}: class_names must be a list of strings")
            doc = doc["labels"]
        if not isinstance(doc, list):
            raise DataFormatError(f"{path}: expected a list of integer labels")
        for i, v in enumerate(doc):
            if not isinstance(v, int) or isinstance(v, bool):
                raise DataFormatError(f"{path}: label {i}: {v!r} is not an integer")
        labels = doc
    else:
        labels = []
        for lineno, line in enumerate(raw.decode(errors="replace").splitlines(), 1):
            try:
                labels.append(int(line))
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: {line.strip()!r} is not an integer label "
                                      "(one label per line)") from None
    if len(labels) != n:
        raise DataFormatError(f"{path}: {len(labels)} labels for {n} sequences")
    return np.asarray(labels, np.int64), names


def _label_path(data: Path) -> Path:
    """ST-GCN's naming: train_data.npy -> train_label.json (or .txt), else <stem>_label.json."""
    stem = data.stem.removesuffix("_data")
    for suffix in (".json", ".txt", ".pkl"):  # .pkl only to say how to convert it
        cand = data.with_name(f"{stem}_label{suffix}")
        if cand.is_file():
            return cand
    raise DataFormatError(f"{data}: no label file {stem}_label.json or .txt beside it (or pass the labels option)")


def load_stgcn_npy(path: str | Path, labels: str | None = None, test_data: str | None = None,
                   test_labels: str | None = None, flip_pairs: list[list[int]] | None = None) -> SkeletonDataset:
    """ST-GCN-style arrays: `path` (N, C, T, V, M) training data with its labels, and the test side
    (`test_data`, default val_data.npy beside it); split "train/test"."""
    path = Path(path)
    parts, names, persons = [], None, None
    for side, data, label in (("train", path, labels), ("test", test_data, test_labels)):
        if data is None:  # ST-GCN's name for the test side
            data = path.with_name(path.name.replace("train", "val", 1))
            if data == path:
                raise DataFormatError(f"{path}: name the test arrays with the test_data option (no 'train' "
                                      "in the file name to replace by 'val')")
        data = Path(data)
        if not data.is_file():
            raise DataFormatError(f"{data}: missing file ({side} arrays)")
        try:
            x = np.load(data, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataFormatError(f"{data}: not a readable .npy array: {e}") from None
        if not isinstance(x, np.ndarray) or x.ndim != 5 or 0 in x.shape:
            raise DataFormatError(f"{data}: shape {getattr(x, 'shape', None)}, expected (N, C, T, V, M)")
        n, c, t, v, m = x.shape
        if persons is not None and m != persons:
            raise DataFormatError(f"{data}: {m} persons, but the training arrays have {persons}")
        persons = m
        y, side_names = read_label_file(Path(label) if label else _label_path(data), n)
        names = names or side_names
        seqs = _trimmed(data, "data", np.transpose(x, (0, 2, 4, 3, 1)).reshape(n, t, m * v, c))
        parts.append((side, seqs, y))
    return _fields(path, parts, persons, names, None, flip_pairs)
