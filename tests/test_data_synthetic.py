"""The synthetic dataset: deterministic per seed, balanced, well-formed, fast, learnable but not trivial."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pmp.data import PreprocessConfig, load_dataset, preprocess


@pytest.fixture(scope="module")
def ds():
    return load_dataset("synthetic")


def test_same_seed_same_data_other_seed_other_data(ds) -> None:
    again, other = load_dataset("synthetic", seed=0), load_dataset("synthetic", seed=1)
    assert np.array_equal(ds.labels, again.labels)
    assert all(np.array_equal(a, b) for a, b in zip(ds.sequences, again.sequences))
    assert all(np.array_equal(getattr(ds.splits[0], p), getattr(again.splits[0], p)) for p in ("train", "test"))
    assert not np.array_equal(ds.labels, other.labels)
    assert not any(a.shape == b.shape and np.allclose(a, b) for a, b in zip(ds.sequences, other.sequences))


def test_shapes_layout_and_lengths(ds) -> None:
    assert (len(ds.sequences), ds.num_nodes, ds.num_channels, ds.num_classes) == (600, 21, 3, 10)
    assert ds.layout == "hand" and len(ds.edges) == 20
    assert ds.lengths.min() >= 20 and ds.lengths.max() <= 60 and len(set(ds.lengths)) > 20
    assert all(np.isfinite(s).all() for s in ds.sequences)


def test_classes_and_split_are_balanced(ds) -> None:
    assert np.bincount(ds.labels).tolist() == [60] * 10
    (split,) = ds.splits
    assert (split.name, len(split.train), len(split.test)) == ("train/test", 400, 200)
    assert not set(split.train) & set(split.test)
    assert np.bincount(ds.labels[split.test]).tolist() == [20] * 10


def test_sizes_are_options() -> None:
    small = load_dataset("synthetic", seed=3, num_sequences=45, min_frames=5, max_frames=8)
    assert len(small.sequences) == 45 and 5 <= small.lengths.min() and small.lengths.max() <= 8
    with pytest.raises(ValueError, match="num_sequences"):
        load_dataset("synthetic", num_sequences=10)


def test_generation_is_fast() -> None:
    best = min(_timed(lambda: load_dataset("synthetic", seed=7)) for _ in range(3))
    assert best < 1.0


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_learnable_but_not_trivial(ds) -> None:
    """A linear (ridge) classifier on the preprocessed frames does far better than chance (10%)
    yet errs (about 94%): classes overlap through speed, amplitude, orientation and noise."""
    x = preprocess(ds, PreprocessConfig(frames=8)).flatten(1).double().numpy()
    x = np.hstack([x, np.ones((len(x), 1))])
    tr, te = ds.splits[0].train, ds.splits[0].test
    onehot = np.eye(ds.num_classes)[ds.labels[tr]]
    w = np.linalg.solve(x[tr].T @ x[tr] + 10 * np.eye(x.shape[1]), x[tr].T @ onehot)
    acc = ((x[te] @ w).argmax(1) == ds.labels[te]).mean()
    assert 0.6 < acc < 0.99, acc
