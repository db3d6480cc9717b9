"""The real SBU and FPHA files against the checked facts in their READMEs (../shared/data/*/README.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pmp.data import PreprocessConfig, SkeletonDataset, load_dataset, preprocess
from pmp.data.sbu import denormalize

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def sbu(data_root: Path) -> SkeletonDataset:
    return load_dataset("sbu", data_root)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def fpha_and_log(data_root: Path) -> tuple[SkeletonDataset, list[str]]:
    """FPHA loaded once (about 2 s), with what the loader logged."""
    logger, handler = logging.getLogger("pmp.data.fpha"), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return load_dataset("fpha", data_root), handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_sbu_counts(sbu: SkeletonDataset) -> None:
    assert len(sbu.sequences) == 282
    assert np.bincount(sbu.labels).tolist() == [42, 43, 40, 41, 18, 21, 39, 38]
    assert (sbu.num_nodes, sbu.num_channels, sbu.layout) == (30, 3, "two_person")
    lengths = sbu.lengths
    assert (lengths.min(), lengths.max(), lengths.sum()) == (10, 46, 6822)
    assert sbu.class_names[0] == "Approaching" and sbu.class_names[7] == "Exchanging"


def test_sbu_folds(sbu: SkeletonDataset) -> None:
    assert [s.name for s in sbu.splits] == ["1", "2", "3", "4", "5"]
    assert [len(s.test) for s in sbu.splits] == [55, 52, 56, 54, 65]
    tests = np.concatenate([s.test for s in sbu.splits])
    assert sorted(tests) == list(range(282))  # every sequence is tested exactly once
    for s in sbu.splits:
        assert len(s.train) + len(s.test) == 282 and not set(s.train) & set(s.test)
    fold1_sets = {Path(sbu.sources[i]).parts[-4] for i in sbu.splits[0].test}
    assert fold1_sets == {"s01s02", "s03s04", "s05s02", "s06s04"}


def test_sbu_is_denormalized(sbu: SkeletonDataset) -> None:
    """The official formula maps x, y, z to mm-like units of the same order (raw z is ~4x smaller)."""
    raw = np.loadtxt(sbu.sources[0], delimiter=",")[:, 1:].reshape(-1, 30, 3)
    np.testing.assert_allclose(sbu.sequences[0], denormalize(raw))
    xyz = np.concatenate(sbu.sequences).reshape(-1, 3)
    assert 500 < xyz[:, 2].min() and xyz[:, 2].max() < 5000  # depth: about 1 to 3 m
    spread = xyz.std(axis=0)
    assert spread.max() / spread.min() < 5


def test_sbu_dataset_folder_as_root(data_root: Path, sbu: SkeletonDataset) -> None:
    again = load_dataset("sbu", data_root / "sbu")
    assert again.sources == sbu.sources and np.array_equal(again.sequences[5], sbu.sequences[5])


def test_fpha_counts_and_split(fpha_and_log) -> None:
    fpha, _ = fpha_and_log
    assert len(fpha.sequences) == 1175 and fpha.num_classes == 45
    assert (fpha.num_nodes, fpha.num_channels, fpha.layout) == (21, 3, "hand")
    (split,) = fpha.splits
    assert (split.name, len(split.train), len(split.test)) == ("1:1", 600, 575)
    lengths = fpha.lengths
    assert (lengths.min(), lengths.max(), lengths.sum()) == (7, 1151, 105459)
    subjects = [{Path(fpha.sources[i]).parts[-4] for i in part} for part in (split.train, split.test)]
    assert subjects[0] == subjects[1] == {f"Subject_{k}" for k in range(1, 7)}
    assert fpha.class_names[0] == "open_juice_bottle" and fpha.class_names[44] == "high_five"
    assert sorted(set(fpha.labels.tolist())) == list(range(45))


def test_fpha_exclusions_are_the_three_empty_files(fpha_and_log) -> None:
    fpha, messages = fpha_and_log
    expected = ["Subject_2/close_milk/4", "Subject_2/put_tea_bag/2", "Subject_4/flip_sponge/2"]
    assert [Path(p).parent.as_posix().split("Hand_pose_annotation_v1/")[1] for p in fpha.excluded] == expected
    assert all(Path(p).stat().st_size == 0 for p in fpha.excluded)
    assert len(messages) == 3 and all(any(e in m for m in messages) for e in expected)


@pytest.mark.parametrize("velocity", [False, True])
def test_preprocessing_real_data(sbu: SkeletonDataset, fpha_and_log, velocity: bool) -> None:
    cfg = PreprocessConfig(frames=32, velocity=velocity)
    for ds in (sbu, fpha_and_log[0]):
        x = preprocess(ds, cfg)
        assert x.shape == (len(ds.sequences), 32, ds.num_nodes, 3 * (1 + velocity))
        assert torch.isfinite(x).all()
        assert 0.1 < x[..., :3].std().item() < 10  # scale-normalised: units (mm) are gone


def test_sbu_flip_pairs_are_the_skeletons_left_and_right(sbu: SkeletonDataset) -> None:
    """The mirror renames bones into bones, and each left bone is as long as its right twin in the
    real recordings (pairing a shoulder with an elbow would fail both)."""
    from pmp.data.base import mirror_permutation

    order = mirror_permutation(sbu.flip_pairs, 15, 2)
    edges = {frozenset(e) for e in sbu.edges}
    assert {frozenset((int(order[a]), int(order[b]))) for a, b in sbu.edges} == edges
    x = np.concatenate(sbu.sequences)
    for a, b in sbu.edges:
        ma, mb = order[a], order[b]
        if {a, b} != {ma, mb}:
            left = np.linalg.norm(x[:, a] - x[:, b], axis=-1).mean()
            right = np.linalg.norm(x[:, ma] - x[:, mb], axis=-1).mean()
            assert abs(left - right) < 0.15 * max(left, right), (a, b)
