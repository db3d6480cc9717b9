"""The generic .npz format: what loads, the documented converter example, and every field's errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pmp.data import DataFormatError, load_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"


def valid_fields(n: int = 6, t: int = 5, v: int = 4, c: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, t, v, c)),
        "y": np.arange(n) % 3,
        "split": np.array(["train", "test"] * (n // 2)),
    }


def save(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **fields)
    return path


def test_padded_x_with_lengths(tmp_path: Path) -> None:
    f = valid_fields()
    f["x"][2, 3:] = np.nan  # padding past the length may hold anything
    f["lengths"] = np.array([5, 1, 3, 5, 4, 2])
    ds = load_dataset(str(save(tmp_path, **f)))
    assert [len(s) for s in ds.sequences] == [5, 1, 3, 5, 4, 2]
    np.testing.assert_array_equal(ds.sequences[2], f["x"][2, :3])
    assert (ds.name, ds.layout, ds.class_names, ds.edges) == ("data", "generic", ["0", "1", "2"], None)
    (split,) = ds.splits
    assert (split.name, list(split.train), list(split.test)) == ("train/test", [0, 2, 4], [1, 3, 5])
    assert ds.sources[1] == f"{tmp_path / 'data.npz'}[1]"


def test_per_sequence_arrays_folds_and_options(tmp_path: Path) -> None:
    seqs = [np.ones((t, 6, 2), dtype=np.float32) * t for t in (3, 1, 7, 2)]
    path = save(
        tmp_path,
        **{f"x_{i}": s for i, s in enumerate(seqs)},
        y=np.array([0, 1, 1, 0]),
        split=np.array([2, 1, 2, 3]),
        class_names=np.array(["a", "b"]),
        edges=np.array([[0, 1], [3, 4]]),
        layout=np.array("two_person"),
        root_joint=np.array(1),
    )
    ds = load_dataset(str(path))
    assert [s.shape for s in ds.sequences] == [(3, 6, 2), (1, 6, 2), (7, 6, 2), (2, 6, 2)]
    assert ds.sequences[0].dtype == np.float64
    assert (ds.class_names, ds.edges, ds.layout, ds.root_joint) == (["a", "b"], [(0, 1), (3, 4)], "two_person", 1)
    assert [(s.name, list(s.train), list(s.test)) for s in ds.splits] == [
        ("1", [0, 2, 3], [1]), ("2", [1, 3], [0, 2]), ("3", [0, 1, 2], [3]),
    ]  # fmt: skip


def test_flip_pairs_are_read_and_absent_means_undeclared(tmp_path: Path) -> None:
    assert load_dataset(str(save(tmp_path, **valid_fields()))).flip_pairs is None
    ds = load_dataset(str(save(tmp_path, **_with(flip_pairs=np.array([[0, 2], [1, 3]])))))
    assert ds.flip_pairs == [(0, 2), (1, 3)]
    assert load_dataset(str(save(tmp_path, **_with(flip_pairs=np.zeros((0, 2), int))))).flip_pairs == []


def test_converter_example_in_docs_runs(tmp_path: Path) -> None:
    """The snippet in docs/data.md writes a file that loads as it says."""
    text = DOC.read_text()
    block = re.search(r"<!-- converter-example.*?```python\n(.*?)```", text, re.S)
    assert block, "docs/data.md lost its converter example"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block.group(1), str(DOC), "exec"), {})
    finally:
        os.chdir(cwd)
    ds = load_dataset(str(tmp_path / "my_dataset.npz"))
    assert (len(ds.sequences), ds.num_nodes, ds.num_classes) == (12, 25, 3)
    assert [s.name for s in ds.splits] == ["1", "2"]


def _without(key: str) -> dict[str, Any]:
    f = valid_fields()
    del f[key]
    return f


def _with(**changes: Any) -> dict[str, Any]:
    return {**valid_fields(), **changes}


def _nan_in_sequence_4() -> dict[str, Any]:
    f = valid_fields()
    f["x"][4, 2, 1, 0] = np.inf
    return f


BAD = [
    (_without("y"), "y", "missing"),
    (_without("split"), "split", "missing"),
    (_without("x"), "x", "missing"),
    (_with(x=np.zeros((6, 5, 4))), "x", r"shape \(6, 5, 4\), expected \(N, T, V, C\)"),
    (_with(x=np.zeros((6, 0, 4, 3))), "x", "no zero size"),
    (_with(x=np.full((6, 5, 4, 3), "a")), "x", "sequence 0: dtype <U1 is not numeric"),
    (_nan_in_sequence_4(), "x", "sequence 4: NaN or inf at frame 2"),
    (_with(lengths=np.array([5, 5, 0, 5, 5, 5])), "lengths", "sequence 2: length 0 outside 1..5"),
    (_with(lengths=np.array([5, 5, 5, 6, 5, 5])), "lengths", "sequence 3: length 6 outside 1..5"),
    (_with(lengths=np.array([5.0] * 6)), "lengths", "expected integers"),
    (_with(x_0=np.zeros((2, 4, 3))), "x_0", "either 'x' or 'x_0'"),
    (_with(y=np.arange(6.0)), "y", "expected integers"),
    (_with(y=np.arange(5)), "y", r"shape \(5,\), expected \(6,\)"),
    (_with(y=np.array([0, 1, 2, 0, -1, 2])), "y", "sequence 4: label -1 outside"),
    (_with(class_names=np.array(["a", "b"])), "y", "sequence 2: label 2 outside the 2 classes"),
    (_with(class_names=np.array(["a", "b", "a"])), "class_names", "distinct strings"),
    (_with(split=np.array(["train", "test", "val", "train", "test", "test"])), "split", "sequence 2: 'val'"),
    (_with(split=np.array(["train"] * 6)), "split", "needs both 'train' and 'test'"),
    (_with(split=np.ones(6, dtype=int)), "split", "at least two distinct folds"),
    (_with(split=np.ones(6)), "split", "expected integers"),
    (_with(edges=np.array([[0, 1], [2, 4]])), "edges", r"joint index outside 0..3"),
    (_with(edges=np.array([0, 1])), "edges", r"shape \(2,\), expected \(\*, 2\)"),
    (_with(layout=np.array("body")), "layout", "'body' is not one of"),
    (_with(layout=np.array(["hand"])), "layout", "expected a scalar"),
    (_with(root_joint=np.array(4)), "root_joint", "4 is not a joint of one person"),
    (_with(flip_pairs=np.array([[1, 4]])), "flip_pairs", r"pair \(1, 4\) is not two joints of one person \(0..3\)"),
    (_with(flip_pairs=np.array([[1, 3]]), layout=np.array("two_person")), "flip_pairs", r"\(1, 3\) is not two joints of one person \(0..1\)"),
    (_with(flip_pairs=np.array([[0, 1], [2, 1]])), "flip_pairs", r"pair \(2, 1\) repeats a joint"),
    (_with(flip_pairs=np.array([0, 1])), "flip_pairs", r"shape \(2,\), expected \(\*, 2\)"),
    (_with(flip_pairs=np.array([[0.0, 1.0]])), "flip_pairs", "expected integers"),
    (_with(labels=np.arange(6)), "labels", "unknown field"),
]


@pytest.mark.parametrize(("fields", "field", "pattern"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_is_named(tmp_path: Path, fields: dict[str, Any], field: str, pattern: str) -> None:
    path = save(tmp_path, **fields)
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: field {field!r}: ") + ".*" + pattern):
        load_dataset(str(path))


def test_per_sequence_errors_name_the_array(tmp_path: Path) -> None:
    base = {"y": np.array([0, 1, 0]), "split": np.array(["train", "test", "test"])}
    seqs = {"x_0": np.zeros((3, 4, 3)), "x_1": np.zeros((2, 4, 3)), "x_2": np.zeros((2, 5, 3))}
    with pytest.raises(DataFormatError, match=r"field 'x_2': sequence 2: shape \(2, 5, 3\)"):
        load_dataset(str(save(tmp_path, **base, **seqs)))
    seqs["x_2"] = np.zeros((0, 4, 3))
    with pytest.raises(DataFormatError, match=r"field 'x_2': sequence 2: shape \(0, 4, 3\)"):
        load_dataset(str(save(tmp_path, **base, **seqs)))
    seqs["x_3"] = seqs.pop("x_2")
    with pytest.raises(DataFormatError, match=r"field 'x_2': missing \(found x_3"):
        load_dataset(str(save(tmp_path, **base, **seqs)))
    seqs["x_2"] = np.zeros((2, 4, 3))
    with pytest.raises(DataFormatError, match=r"field 'lengths': only goes with a padded 'x'"):
        load_dataset(str(save(tmp_path, **base, **seqs, lengths=np.ones(4, dtype=int))))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"missing\.npz: missing file"):
        load_dataset(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataFormatError, match=r"junk\.npz: not a readable \.npz file"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match=r"one\.npy: shape \(3,\), expected \(N, C, T, V, M\)"):  # ST-GCN layout
        load_dataset(str(tmp_path / "one.npy"))
    path = save(tmp_path, **_with(class_names=np.array(["a", None, "c"], dtype=object)))
    with pytest.raises(DataFormatError, match=r"field 'class_names': cannot be read"):
        load_dataset(str(path))
