"""Input features and feature-aware augmentation: values on hand-built sequences, invariances, layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.data import AugmentConfig, DataFormatError, PreprocessConfig, SkeletonDataset, Split, augment, preprocess
from pmp.data.features import FEATURES, chunk_means, compute_features, input_layout, motion
from pmp.data.preprocess import layout_of, mirror, swap_persons

FAST = settings(max_examples=30, deadline=None)
HAND_EDGES = [(0, 1), (1, 2), (0, 3)]
PAIR_EDGES = [(0, 1), (0, 2), (3, 4), (3, 5)]  # two persons of 3 joints, root 0


def dataset(seqs, layout="generic", edges=None) -> SkeletonDataset:
    n = len(seqs)
    return SkeletonDataset(name="t", sequences=seqs, labels=np.arange(n) % 2, class_names=["a", "b"],
                           splits=[Split("s", np.arange(n), np.arange(n))], layout=layout, edges=edges)


def random_seqs(seed: int, count: int = 3, v: int = 4, c: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(2, 20)), v, c)) * 10 for _ in range(count)]


def rotation(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def test_distances_by_hand() -> None:
    """Three joints on a line at 0, 3 and 7: distance channels are |i - j| in joint order."""
    x = torch.tensor([[0.0, 0, 0], [3, 0, 0], [7, 0, 0]]).view(1, 1, 3, 3)
    d = compute_features(x, ["distance"], 1, None, [0], [1])[0, 0]
    torch.testing.assert_close(d, torch.tensor([[0.0, 3, 7], [3, 0, 4], [7, 4, 0]]))


@FAST
@given(seed=st.integers(0, 2**16), v=st.integers(1, 9), t=st.integers(1, 6))
def test_distances_symmetric_zero_diagonal(seed: int, v: int, t: int) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, t, v, 3)))
    d = compute_features(x, ["distance"], 1, None, [0], [1])
    assert d.shape == (2, t, v, v)
    torch.testing.assert_close(d, d.transpose(-1, -2))
    assert torch.all(torch.diagonal(d, dim1=-2, dim2=-1) == 0)


def test_two_person_distances_are_own_person_first() -> None:
    """For two persons of 2 joints, joint 2's channels are distances to joints (2, 3, 0, 1)."""
    x = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 5, 0], [0, 7, 0]]).view(1, 1, 4, 3)
    full = torch.cdist(x[0, 0], x[0, 0])
    d = compute_features(x, ["distance", "distance_within", "distance_cross"], 2, None, [0, 2], [1])[0, 0]
    torch.testing.assert_close(d[2, :4], full[2, [2, 3, 0, 1]])
    torch.testing.assert_close(d[2, 4:6], full[2, [2, 3]])  # within
    torch.testing.assert_close(d[2, 6:8], full[2, [0, 1]])  # cross
    torch.testing.assert_close(d[0, 6:8], full[0, [2, 3]])


def test_bones_angles_and_motion_by_hand() -> None:
    # hand: wrist 0 at origin, joint 1 at (1,0,0), joint 2 at (1,1,0) (a right angle), joint 3 at (0,0,2)
    f0 = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 2]])
    x = torch.stack([f0, f0 + torch.tensor([0.0, 0, 1])]).unsqueeze(0)  # (1, 2, 4, 3), moving along z
    out = compute_features(x, ["bone", "angle", "motion"], 1, HAND_EDGES, [0], [1])
    bone, angle, mot = out[..., :3], out[..., 3], out[..., 4:]
    torch.testing.assert_close(bone[0, 0], torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2]]))
    torch.testing.assert_close(angle[0, 0], torch.tensor([0.0, 0.0, 0.0, 0.0]))  # root: undefined -> 0; 90 deg -> 0
    torch.testing.assert_close(mot[0, 0], torch.zeros(4, 3))
    torch.testing.assert_close(mot[0, 1], torch.tensor([[0.0, 0, 1]] * 4))
    straight = torch.tensor([[[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0, 0, 1]]]])
    cos = compute_features(straight, ["angle"], 1, HAND_EDGES, [0], [1])[0, 0, :, 0]
    assert cos[2] == pytest.approx(1.0)


def test_multi_scale_motion() -> None:
    x = torch.arange(6, dtype=torch.float64).view(1, 6, 1, 1).expand(1, 6, 1, 3)
    torch.testing.assert_close(motion(x, 2)[0, :, 0, 0], torch.tensor([0.0, 0, 2, 2, 2, 2], dtype=torch.float64))
    layout = input_layout(["position", "motion"], 1, 3, 1, [1, 4])
    assert [(g.name, g.start, g.size) for g in layout.groups] == [("position", 0, 3), ("motion1", 3, 3), ("motion4", 6, 3)]


@FAST
@given(seed=st.integers(0, 2**16), deg=st.floats(-180, 180), shift=st.lists(st.floats(-100, 100), min_size=3, max_size=3),
       layout=st.sampled_from([("hand", HAND_EDGES, 4), ("two_person", PAIR_EDGES, 6)]))  # fmt: skip
def test_geometric_features_invariant_to_rigid_motion(seed, deg, shift, layout) -> None:
    """Distances and angles of a sequence do not change when the whole scene moves rigidly."""
    name, edges, v = layout
    seqs = random_seqs(seed, v=v)
    names = ["distance", "angle"] + (["distance_cross"] if name == "two_person" else [])
    cfg = PreprocessConfig(frames=5, features=names)
    moved = [s @ rotation(deg).T + np.array(shift) for s in seqs]
    a, b = preprocess(dataset(seqs, name, edges), cfg), preprocess(dataset(moved, name, edges), cfg)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("names", [["position"], ["position", "distance", "motion"], list(FEATURES)])
def test_layout_matches_computed_channels(names) -> None:
    ds = dataset(random_seqs(1, v=6), "two_person", PAIR_EDGES)
    cfg = PreprocessConfig(frames=7, features=names, motion_steps=[1, 3])
    x = preprocess(ds, cfg)
    assert x.shape[-1] == layout_of(ds, cfg).channels


def test_chunk_means() -> None:
    x = torch.arange(10, dtype=torch.float64).view(1, 10, 1, 1)
    torch.testing.assert_close(chunk_means(x, 4)[0, :, 0, 0], torch.tensor([1.0, 4, 6.5, 8.5], dtype=torch.float64))  # spans of 3, 3, 2, 2
    ds = dataset(random_seqs(2))
    assert preprocess(ds, PreprocessConfig(frames=12, chunks=4)).shape == (3, 4, 4, 3)


@pytest.mark.parametrize("bad", [dict(features=[]), dict(features=["positions"]), dict(features=["position"] * 2),
                                 dict(motion_steps=[0]), dict(chunks=40), dict(chunks=-1)])
def test_bad_feature_config_names_the_field(bad) -> None:
    with pytest.raises(ValueError, match="PreprocessConfig"):
        PreprocessConfig(frames=32, **bad)


def test_features_needing_data_the_dataset_lacks_are_errors() -> None:
    with pytest.raises(ValueError, match="distance_cross"):
        preprocess(dataset(random_seqs(0)), PreprocessConfig(frames=4, features=["distance_cross"]))
    with pytest.raises(ValueError, match="edges"):
        preprocess(dataset(random_seqs(0)), PreprocessConfig(frames=4, features=["bone"]))


def test_velocity_alias_is_motion() -> None:
    cfg = PreprocessConfig(frames=6, velocity=True)
    assert cfg.features == ["position", "motion"] and not cfg.velocity


# ------------------------------------------------------------------ augmentation on features


def pair_batch(seed: int = 0):
    ds = dataset(random_seqs(seed, count=8, v=6), "two_person", PAIR_EDGES)
    cfg = PreprocessConfig(frames=5, features=["position", "distance", "bone", "motion"])
    return ds, cfg, preprocess(ds, cfg), layout_of(ds, cfg)


def test_swap_exchanges_persons_and_matches_swapped_data() -> None:
    """Swapping person slots after feature computation equals computing features on swapped data."""
    ds, cfg, x, layout = pair_batch()
    out = augment(x, AugmentConfig(swap=1.0), torch.Generator().manual_seed(0), layout)
    swapped = dataset([np.concatenate([s[:, 3:], s[:, :3]], 1) for s in ds.sequences], "two_person", PAIR_EDGES)
    # centring on the pair's midpoint and the per-sequence scale are symmetric in the two persons
    torch.testing.assert_close(out, preprocess(swapped, cfg), rtol=1e-5, atol=1e-5)
    assert torch.equal(augment(x, AugmentConfig(swap=1e-9), torch.Generator().manual_seed(0), layout), x)


def test_swap_persons_is_the_swapped_data_and_an_involution() -> None:
    ds, cfg, x, _ = pair_batch()
    swapped = dataset([np.concatenate([s[:, 3:], s[:, :3]], 1) for s in ds.sequences], "two_person", PAIR_EDGES)
    torch.testing.assert_close(swap_persons(x), preprocess(swapped, cfg), rtol=1e-5, atol=1e-5)
    assert torch.equal(swap_persons(swap_persons(x)), x)
    with pytest.raises(ValueError, match="5 joints"):
        swap_persons(torch.zeros(1, 2, 5, 3))


@FAST
@given(seed=st.integers(0, 2**16), p=st.floats(0.05, 1.0))
def test_swap_is_deterministic_for_a_seed_and_only_permutes(seed: int, p: float) -> None:
    _, _, x, layout = pair_batch()
    a = augment(x, AugmentConfig(swap=p), torch.Generator().manual_seed(seed), layout)
    b = augment(x, AugmentConfig(swap=p), torch.Generator().manual_seed(seed), layout)
    assert torch.equal(a, b)
    for i in range(len(x)):  # every sample is itself or its person-swapped self
        assert torch.equal(a[i], x[i]) or torch.equal(a[i], torch.cat([x[i, :, 3:], x[i, :, :3]], 1))


def test_rotation_turns_vectors_and_keeps_distances() -> None:
    ds, cfg, x, layout = pair_batch()
    out = augment(x, AugmentConfig(rotate=90), torch.Generator().manual_seed(3), layout)
    length = layout.indices("length")
    torch.testing.assert_close(out[..., length], x[..., length])  # distances untouched
    for g in layout.vector_groups():  # vector norms preserved, directions changed
        sl = slice(g.start, g.start + 3)
        torch.testing.assert_close(out[..., sl].norm(dim=-1), x[..., sl].norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[..., :3], x[..., :3])


def test_scale_multiplies_lengths_and_vectors_alike() -> None:
    ds, cfg, x, layout = pair_batch()
    out = augment(x, AugmentConfig(scale=0.5), torch.Generator().manual_seed(1), layout)
    ratio = out / torch.where(x == 0, 1.0, x)
    per_sample = ratio[:, 1, 0, 0]
    nonzero = x != 0
    torch.testing.assert_close(ratio[nonzero], per_sample.view(-1, 1, 1, 1).expand_as(x)[nonzero])


# --------------------------------------------------------------------------- flip (mirror image)
FLIP_PAIRS = [(1, 2)]  # within each person of pair_batch's 3 joints
MIRROR_ORDER = [0, 2, 1, 3, 5, 4]


def flip_dataset(seed: int = 0) -> SkeletonDataset:
    ds = dataset(random_seqs(seed, count=8, v=6), "two_person", PAIR_EDGES)
    ds.flip_pairs = list(FLIP_PAIRS)
    return ds


def test_mirror_negates_the_axis_and_exchanges_the_pairs_in_every_person() -> None:
    ds = flip_dataset()
    m = mirror(ds, axis=0)
    for a, b in zip(ds.sequences, m.sequences):
        np.testing.assert_array_equal(b[..., 0], -a[:, MIRROR_ORDER, 0])
        np.testing.assert_array_equal(b[..., 1:], a[:, MIRROR_ORDER, 1:])
    twice = mirror(m, axis=0)
    assert all(np.array_equal(a, b) for a, b in zip(ds.sequences, twice.sequences))
    assert np.array_equal(m.labels, ds.labels) and m.flip_pairs == ds.flip_pairs
    z = mirror(ds, axis=2).sequences[0]
    np.testing.assert_array_equal(z[..., 2], -ds.sequences[0][:, MIRROR_ORDER, 2])


@FAST
@given(seed=st.integers(0, 2**16))
def test_mirror_features_are_the_originals_with_joints_renamed(seed: int) -> None:
    """Distances and angles are unchanged by a reflection: the mirror's distance channels are the
    original's with joints (rows) and their distance partners (channels) renamed alike."""
    ds = flip_dataset(seed)
    cfg = PreprocessConfig(frames=5, features=["distance", "angle"])
    x, xm = preprocess(ds, cfg), preprocess(mirror(ds), cfg)
    layout = layout_of(ds, cfg)
    (dist,) = [g for g in layout.groups if g.name == "distance"]
    own_first = [[0, 1, 2, 3, 4, 5], [3, 4, 5, 0, 1, 2]]  # channel c of joint j: distance to joint own_first[p][c]
    for j in range(6):
        p, pj = j // 3, MIRROR_ORDER[j]
        for c in range(6):
            partner = MIRROR_ORDER[own_first[p][c]]
            c_orig = own_first[pj // 3].index(partner)
            torch.testing.assert_close(xm[:, :, j, dist.start + c], x[:, :, pj, dist.start + c_orig], rtol=1e-5, atol=1e-5)
    angle = layout.indices("scalar")
    torch.testing.assert_close(xm[..., angle], x[:, :, MIRROR_ORDER][..., angle], rtol=1e-4, atol=1e-5)


def test_flip_picks_the_mirrored_batch_first_and_is_off_at_zero() -> None:
    ds = flip_dataset()
    cfg = PreprocessConfig(frames=5, features=["position", "distance"])
    x, xm = preprocess(ds, cfg), preprocess(mirror(ds), cfg)
    layout = layout_of(ds, cfg)
    assert torch.equal(augment(x, AugmentConfig(flip=1.0), torch.Generator().manual_seed(0), layout, xm), xm)
    assert torch.equal(augment(x, AugmentConfig(flip=1e-9), torch.Generator().manual_seed(0), layout, xm), x)
    # flip 0 draws nothing: the other transforms see the generator as before the flip existed
    rot = AugmentConfig(rotate=30)
    assert torch.equal(augment(x, rot, torch.Generator().manual_seed(4), layout, xm),
                       augment(x, rot, torch.Generator().manual_seed(4), layout))
    # with rotation too, a flipped sample is the rotated mirror image
    both = augment(x, AugmentConfig(flip=1.0, rotate=30), torch.Generator().manual_seed(4), layout, xm)
    g = torch.Generator().manual_seed(4)
    torch.rand(len(x), generator=g, dtype=x.dtype)  # the flip's draw
    torch.testing.assert_close(both, augment(xm, rot, g, layout))
    with pytest.raises(ValueError, match="augment.flip needs the mirrored batch"):
        augment(x, AugmentConfig(flip=0.5), torch.Generator().manual_seed(0), layout)


@FAST
@given(seed=st.integers(0, 2**16), p=st.floats(0.05, 1.0))
def test_flip_is_deterministic_for_a_seed_and_only_chooses(seed: int, p: float) -> None:
    ds = flip_dataset()
    cfg = PreprocessConfig(frames=5, features=["position", "bone"])
    x, xm = preprocess(ds, cfg), preprocess(mirror(ds), cfg)
    a = augment(x, AugmentConfig(flip=p), torch.Generator().manual_seed(seed), None, xm)
    assert torch.equal(a, augment(x, AugmentConfig(flip=p), torch.Generator().manual_seed(seed), None, xm))
    assert all(torch.equal(a[i], x[i]) or torch.equal(a[i], xm[i]) for i in range(len(x)))


def test_flip_needs_declared_valid_pairs() -> None:
    ds = dataset(random_seqs(0, count=2, v=6), "two_person", PAIR_EDGES)
    with pytest.raises(DataFormatError, match="t: the flip augmentation needs the dataset's flip_pairs"):
        mirror(ds)
    for pairs, needle in (([(1, 3)], r"pair \(1, 3\) is not two joints of one person \(0..2\)"),
                          ([(1, 1)], r"pair \(1, 1\) is not two joints"),
                          ([(0, 1), (1, 2)], r"pair \(1, 2\) repeats a joint")):
        with pytest.raises(DataFormatError, match=f"t: flip_pairs: {needle}"):
            SkeletonDataset(name="t", sequences=ds.sequences, labels=ds.labels, class_names=ds.class_names,
                            splits=ds.splits, layout="two_person", flip_pairs=pairs)
    with pytest.raises(ValueError, match="AugmentConfig.flip must be in"):
        AugmentConfig(flip=1.5)
    with pytest.raises(ValueError, match="AugmentConfig.flip_axis must be 0, 1 or 2"):
        AugmentConfig(flip_axis=3)
