"""CTR-GCN-style .npz and ST-GCN-style .npy arrays: each loads to what the generic format gives on
the same data (files written here), and bad files of each layout fail with a clear error."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.data import load_dataset
from pmp.data.base import DataFormatError


def _make(rng: np.random.Generator, n: int, persons: int, joints: int, chans: int, classes: int,
          absent: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences (T_i, M*V, C) of random lengths, non-zero; with `absent`, the first sequence's
    second person is all zeros (a one-person clip in a two-person file)."""
    seqs = [rng.normal(size=(int(rng.integers(1, 9)), persons * joints, chans)) for _ in range(n)]
    if absent and persons == 2:
        seqs[0][:, joints:] = 0
    return seqs, rng.integers(0, classes, n)


def _padded(seqs: list[np.ndarray], pad: int) -> np.ndarray:
    t = max(len(s) for s in seqs) + pad
    out = np.zeros((len(seqs), t, *seqs[0].shape[1:]), np.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def _generic(tmp, seqs, labels, n_train, persons, classes):
    path = tmp / "generic.npz"
    np.savez(path, **{f"x_{i}": s.astype(np.float32) for i, s in enumerate(seqs)}, y=labels,
             split=np.array(["train"] * n_train + ["test"] * (len(seqs) - n_train)),
             layout=np.array("two_person" if persons == 2 else "generic"),
             class_names=np.array([str(k) for k in range(classes)]))
    return load_dataset(str(path))


def _write_ctrgcn(path, seqs, labels, n_train, classes, pad=3):
    x = _padded(seqs, pad)  # (N, T, M*V, C): persons, then joints, then coordinates
    x = x.reshape(len(x), x.shape[1], -1)
    onehot = np.eye(classes)[labels]
    np.savez(path, x_train=x[:n_train], y_train=onehot[:n_train], x_test=x[n_train:], y_test=onehot[n_train:])


def _write_stgcn(folder, seqs, labels, n_train, persons, label_format="json"):
    x = _padded(seqs, 4)
    n, t, mv, c = x.shape
    x = x.reshape(n, t, persons, mv // persons, c).transpose(0, 4, 1, 3, 2)  # (N, C, T, V, M)
    for side, sl in (("train", slice(0, n_train)), ("val", slice(n_train, n))):
        np.save(folder / f"{side}_data.npy", np.ascontiguousarray(x[sl]))
        y = [int(v) for v in labels[sl]]
        if label_format == "json":
            (folder / f"{side}_label.json").write_text(json.dumps(y))
        else:
            (folder / f"{side}_label.txt").write_text("".join(f"{v}\n" for v in y))


def _same(a, b):
    assert len(a.sequences) == len(b.sequences)
    for s, t in zip(a.sequences, b.sequences):
        np.testing.assert_array_equal(s, t)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.layout, a.class_names, a.root_joint) == (b.layout, b.class_names, b.root_joint)
    assert [(s.name, s.train.tolist(), s.test.tolist()) for s in a.splits] == \
        [(s.name, s.train.tolist(), s.test.tolist()) for s in b.splits]


layouts = st.tuples(st.integers(2, 7), st.sampled_from([1, 2]), st.integers(1, 5), st.sampled_from([2, 3]),
                    st.integers(2, 4), st.booleans(), st.integers(0, 2**16))


@settings(max_examples=15, deadline=None)
@given(layouts)
def test_both_layouts_load_as_the_generic_format(case):
    n, persons, joints, chans, classes, absent, seed = case
    rng = np.random.default_rng(seed)
    seqs, labels = _make(rng, n, persons, joints, chans, classes, absent)
    labels[0] = classes - 1  # every class exists in the one-hot width and the generic max + 1
    n_train = max(1, n // 2)
    with tempfile.TemporaryDirectory() as tmp:
        _check_layouts(Path(tmp), seqs, labels, n_train, persons, chans, classes, seed)


def _check_layouts(folder, seqs, labels, n_train, persons, chans, classes, seed):
    want = _generic(folder, seqs, labels, n_train, persons, classes)
    _write_ctrgcn(folder / "ctr.npz", seqs, labels, n_train, classes)
    _same(load_dataset(str(folder / "ctr.npz"), persons=persons, channels=chans), want)
    _write_stgcn(folder, seqs, labels, n_train, persons, label_format="json" if seed % 2 else "txt")
    _same(load_dataset(str(folder / "train_data.npy")), want)


def test_an_absent_second_person_stays_and_padding_goes(tmp_path):
    rng = np.random.default_rng(0)
    seqs, labels = _make(rng, 4, 2, 3, 3, 2, absent=True)
    _write_ctrgcn(tmp_path / "c.npz", seqs, labels, 2, 2, pad=5)
    ds = load_dataset(str(tmp_path / "c.npz"))
    assert ds.layout == "two_person" and ds.num_nodes == 6
    assert [len(s) for s in ds.sequences] == [len(s) for s in seqs]
    assert not ds.sequences[0][:, 3:].any() and ds.sequences[0][:, :3].all()


def test_flip_pairs_option_of_both_layouts(tmp_path):
    """Neither layout records left and right: the option declares them, checked like the generic field."""
    rng = np.random.default_rng(1)
    seqs, labels = _make(rng, 4, 2, 3, 3, 2, absent=False)
    _write_ctrgcn(tmp_path / "c.npz", seqs, labels, 2, 2)
    _write_stgcn(tmp_path, seqs, labels, 2, 2)
    for path in (tmp_path / "c.npz", tmp_path / "train_data.npy"):
        assert load_dataset(str(path)).flip_pairs is None
        assert load_dataset(str(path), flip_pairs=[[1, 2]]).flip_pairs == [(1, 2)]
        assert load_dataset(str(path), flip_pairs=[]).flip_pairs == []
        with pytest.raises(DataFormatError, match=r"field 'flip_pairs': pair \(1, 3\) is not two joints of one person"):
            load_dataset(str(path), flip_pairs=[[1, 3]])
        with pytest.raises(DataFormatError, match=r"option 'flip_pairs'"):
            load_dataset(str(path), flip_pairs=[[1, 2], [0]])


def test_stgcn_options_name_the_files(tmp_path):
    rng = np.random.default_rng(1)
    seqs, labels = _make(rng, 4, 1, 3, 3, 2, absent=False)
    _write_stgcn(tmp_path, seqs, labels, 2, 1)
    (tmp_path / "train_data.npy").rename(tmp_path / "a.npy")
    (tmp_path / "val_data.npy").rename(tmp_path / "b.npy")
    (tmp_path / "names.json").write_text(json.dumps({"labels": labels[2:].tolist(), "class_names": ["x", "y"]}))
    ds = load_dataset(str(tmp_path / "a.npy"), labels=str(tmp_path / "train_label.json"),
                      test_data=str(tmp_path / "b.npy"), test_labels=str(tmp_path / "names.json"))
    assert ds.class_names == ["x", "y"] and ds.split().test.tolist() == [2, 3]


@pytest.fixture
def ctr(tmp_path):
    rng = np.random.default_rng(2)
    seqs, labels = _make(rng, 4, 2, 3, 3, 3, absent=False)
    x = _padded(seqs, 2).reshape(4, -1, 18)
    return tmp_path / "c.npz", dict(x_train=x[:2], y_train=np.eye(3)[labels[:2]], x_test=x[2:], y_test=np.eye(3)[labels[2:]])


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update(extra=np.zeros(3)), r"field 'extra': unknown field"),
    (lambda f: f.pop("y_test"), r"field 'y_test': missing"),
    (lambda f: f.update(x_train=f["x_train"][..., :17]), r"field 'x_train': shape \(2, \d+, 17\), expected \(N, T, M\*V\*C\)"),
    (lambda f: f.update(y_train=f["y_train"] * 2), r"field 'y_train': sequence 0: .* is not a one-hot row"),
    (lambda f: f.update(y_test=np.eye(4)[:2]), r"field 'y_test': 4 classes, but y_train has 3"),
    (lambda f: f.update(y_test=np.zeros((3, 3))), r"field 'y_test': shape \(3, 3\) .*expected one-hot \(N=2, K\)"),
    (lambda f: f["x_test"].__setitem__((1, 0, 4), np.nan), r"field 'x_test': sequence 1: NaN or inf at frame 0"),
    (lambda f: f["x_train"].__setitem__(1, 0), r"field 'x_train': sequence 1: every frame is zero"),
    (lambda f: f.update(y_train=np.array([5, 0])), r"field 'y': sequence 0: label 5 outside the 3 classes"),
])
def test_bad_ctrgcn_files(ctr, change, message):
    path, fields = ctr
    change(fields)
    np.savez(path, **fields)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(str(path))


def test_ctrgcn_object_arrays_are_not_unpickled(ctr):
    path, fields = ctr
    fields["y_train"] = np.array([[1, 0, 0], None], dtype=object)
    np.savez(path, **fields)
    with pytest.raises(DataFormatError, match=r"field 'y_train': cannot be read"):
        load_dataset(str(path))


@pytest.fixture
def stgcn(tmp_path):
    rng = np.random.default_rng(3)
    seqs, labels = _make(rng, 4, 2, 3, 3, 3, absent=False)
    _write_stgcn(tmp_path, seqs, labels, 2, 2)
    return tmp_path


def test_pickled_labels_are_refused_with_the_conversion(stgcn):
    (stgcn / "train_label.json").unlink()
    with open(stgcn / "train_label.pkl", "wb") as f:
        pickle.dump((["a", "b"], [0, 1]), f)
    with pytest.raises(DataFormatError, match=r"train_label\.pkl: a pickled label file.*never loads.*json\.dump"):
        load_dataset(str(stgcn / "train_data.npy"))
    (stgcn / "train_label.pkl").rename(stgcn / "train_label.json")  # a pickle by content, whatever its name
    with pytest.raises(DataFormatError, match=r"train_label\.json: a pickled label file"):
        load_dataset(str(stgcn / "train_data.npy"))


@pytest.mark.parametrize("name, content, message", [
    ("train_label.json", "[0, 1, 2]", r"train_label\.json: 3 labels for 2 sequences"),
    ("train_label.json", "[0, 1.5]", r"train_label\.json: label 1: 1\.5 is not an integer"),
    ("train_label.json", "{\"label\": [0, 1]}", r"train_label\.json: expected a list of labels"),
    ("train_label.json", "[0, ", r"train_label\.json: invalid JSON"),
    ("val_label.json", "{\"labels\": [0, 7], \"class_names\": [\"a\", \"b\", \"c\"]}",
     r"field 'y': sequence 3: label 7 outside the 3 classes"),
])
def test_bad_stgcn_label_files(stgcn, name, content, message):
    (stgcn / name).write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(str(stgcn / "train_data.npy"))


def test_bad_stgcn_text_labels_name_the_line(stgcn):
    (stgcn / "train_label.json").unlink()
    (stgcn / "train_label.txt").write_text("0\nwave\n")
    with pytest.raises(DataFormatError, match=r"train_label\.txt:2: 'wave' is not an integer label"):
        load_dataset(str(stgcn / "train_data.npy"))


def test_bad_stgcn_arrays(stgcn):
    np.save(stgcn / "val_data.npy", np.zeros((2, 3, 4, 3)))
    with pytest.raises(DataFormatError, match=r"val_data\.npy: shape \(2, 3, 4, 3\), expected \(N, C, T, V, M\)"):
        load_dataset(str(stgcn / "train_data.npy"))
    np.save(stgcn / "val_data.npy", np.ones((2, 3, 4, 3, 1)))
    with pytest.raises(DataFormatError, match=r"val_data\.npy: 1 persons, but the training arrays have 2"):
        load_dataset(str(stgcn / "train_data.npy"))
    (stgcn / "val_data.npy").unlink()
    with pytest.raises(DataFormatError, match=r"val_data\.npy: missing file \(test arrays\)"):
        load_dataset(str(stgcn / "train_data.npy"))
    (stgcn / "train_label.json").unlink()
    with pytest.raises(DataFormatError, match=r"train_data\.npy: no label file train_label\.json"):
        load_dataset(str(stgcn / "train_data.npy"))
