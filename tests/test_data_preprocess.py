"""Preprocessing and augmentation: rules that hold for every input (hypothesis) and the documented choices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.data import AugmentConfig, PreprocessConfig, SkeletonDataset, Split, augment, preprocess
from pmp.data.preprocess import resample

FAST = settings(max_examples=40, deadline=None)
LAYOUTS = [("hand", [(0, 1), (1, 2), (0, 3)]), ("two_person", [(0, 1), (2, 3)]), ("generic", None)]


def dataset(seqs: list[np.ndarray], layout: str = "generic", edges=None, root_joint: int = 0) -> SkeletonDataset:
    n = len(seqs)
    return SkeletonDataset(
        name="t", sequences=seqs, labels=np.zeros(n), class_names=["a"],
        splits=[Split("s", np.arange(n), np.arange(n))], layout=layout, edges=edges, root_joint=root_joint,
    )  # fmt: skip


def random_seqs(seed: int, count: int = 3, v: int = 4, c: int = 3, max_t: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(1, max_t)), v, c)) * 50 for _ in range(count)]


# ------------------------------------------------------------------ temporal resampling


@FAST
@given(t=st.integers(1, 80), frames=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_resample_any_length_keeps_endpoints(t: int, frames: int, seed: int) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(t, 3, 2)))
    r = resample(x, frames)
    assert r.shape == (frames, 3, 2)
    torch.testing.assert_close(r[0], x[0], rtol=0, atol=0)
    if frames >= 2:
        torch.testing.assert_close(r[-1], x[-1], rtol=0, atol=1e-12)


@FAST
@given(t=st.integers(2, 80), frames=st.integers(2, 64))
def test_resample_is_exact_on_linear_motion(t: int, frames: int) -> None:
    """Linear interpolation reproduces motion that is linear in time, at any rate."""
    a, b = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.1, -0.7])
    x = (a + b * torch.arange(t, dtype=torch.float64)[:, None])[:, None, :]  # (T, 1, 3)
    want = a + b * torch.linspace(0, t - 1, frames, dtype=torch.float64)[:, None]
    torch.testing.assert_close(resample(x, frames)[:, 0], want)


def test_resample_to_same_length_is_identity() -> None:
    x = torch.randn(17, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(resample(x, 17), x)


@FAST
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=6), frames=st.integers(1, 40),
       seed=st.integers(0, 2**16))
def test_resample_of_concatenated_sequences_is_each_resampled_alone(lengths: list[int], frames: int, seed: int) -> None:
    """The batched form preprocess() uses: no sequence reads a neighbour's frames (to float64 rounding:
    an offset start moves the fractional positions by an ulp)."""
    seqs = [torch.from_numpy(np.random.default_rng(seed + i).normal(size=(t, 2, 3))) for i, t in enumerate(lengths)]
    length = torch.tensor(lengths)
    out = resample(torch.cat(seqs), frames, torch.cumsum(length, 0) - length, length)
    assert out.shape == (len(seqs), frames, 2, 3)
    for got, seq in zip(out, seqs):
        torch.testing.assert_close(got, resample(seq, frames), rtol=0, atol=1e-12)  # offsets round apart


def test_preprocess_without_centre_or_scale_only_resamples() -> None:
    seqs = random_seqs(0)
    x = preprocess(dataset(seqs), PreprocessConfig(frames=9, center="none", scale="none"))
    assert x.shape == (3, 9, 4, 3) and x.dtype == torch.float32
    for i, s in enumerate(seqs):
        torch.testing.assert_close(x[i], resample(torch.from_numpy(s), 9).float())


# ------------------------------------------------------------------ centring and scale


@FAST
@given(seed=st.integers(0, 2**16), layout=st.sampled_from(LAYOUTS), velocity=st.booleans(),
       shift=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3))  # fmt: skip
def test_translation_does_not_change_output(seed: int, layout, velocity: bool, shift: list[float]) -> None:
    seqs = random_seqs(seed)
    cfg = PreprocessConfig(frames=8, velocity=velocity)
    a = preprocess(dataset(seqs, *layout), cfg)
    b = preprocess(dataset([s + np.array(shift) for s in seqs], *layout), cfg)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@FAST
@given(seed=st.integers(0, 2**16), layout=st.sampled_from(LAYOUTS), k=st.floats(1e-2, 1e3),
       scale=st.sampled_from(["auto", "std"]))  # fmt: skip
def test_scaling_does_not_change_output(seed: int, layout, k: float, scale: str) -> None:
    seqs = random_seqs(seed)
    cfg = PreprocessConfig(frames=8, scale=scale)
    a = preprocess(dataset(seqs, *layout), cfg)
    b = preprocess(dataset([s * k for s in seqs], *layout), cfg)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@FAST
@given(seed=st.integers(0, 2**16), layout=st.sampled_from(LAYOUTS))
def test_sequences_are_processed_independently(seed: int, layout) -> None:
    """Per-sequence statistics never mix sequences: a batch equals its sequences done one by one."""
    seqs = random_seqs(seed, count=4)
    cfg = PreprocessConfig(frames=6, velocity=True)
    together = preprocess(dataset(seqs, *layout), cfg)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(together[i], preprocess(dataset([s], *layout), cfg)[0])


def test_wrist_centring() -> None:
    """Joints relative to the wrist; the wrist channel is its trajectory from the first frame."""
    (s,) = random_seqs(1, count=1, max_t=12)
    s = np.concatenate([s, s[::-1]])  # at least 2 frames
    x = preprocess(dataset([s], "hand"), PreprocessConfig(frames=len(s), scale="none"))[0].double()
    np.testing.assert_allclose(x[:, 1:], s[:, 1:] - s[:, :1], atol=1e-3)
    np.testing.assert_allclose(x[:, 0], s[:, 0] - s[0, 0], atol=1e-3)


def test_pair_centring_uses_first_frame_root_midpoint() -> None:
    (s,) = random_seqs(2, count=1, v=6, max_t=12)
    x = preprocess(dataset([s], "two_person", root_joint=1), PreprocessConfig(frames=len(s), scale="none"))[0]
    mid = (s[0, 1] + s[0, 4]) / 2
    np.testing.assert_allclose(x.double(), s - mid, atol=1e-3)


def test_sequence_centring_and_std_scale() -> None:
    (s,) = random_seqs(3, count=1)
    x = preprocess(dataset([s]), PreprocessConfig(frames=len(s))).double()[0]
    np.testing.assert_allclose(x.mean(dim=(0, 1)), 0, atol=1e-5)
    spread = (x - x.mean(dim=1, keepdim=True)).pow(2).sum(-1).mean().sqrt()
    assert spread.item() == pytest.approx(1, abs=1e-5)


def test_bone_scale_makes_mean_bone_length_one() -> None:
    (s,) = random_seqs(4, count=1)
    edges = [(0, 1), (1, 2), (0, 3)]
    x = preprocess(dataset([s], "hand", edges), PreprocessConfig(frames=len(s), center="none")).double()[0]
    a, b = torch.tensor(edges).T
    assert (x[:, a] - x[:, b]).norm(dim=-1).mean().item() == pytest.approx(1, abs=1e-5)


def test_degenerate_sequence_is_left_unscaled() -> None:
    x = preprocess(dataset([np.full((3, 4, 3), 7.0)]), PreprocessConfig(frames=4))
    assert torch.isfinite(x).all() and x.abs().max() == 0


def test_velocity_channels_are_frame_differences() -> None:
    x = preprocess(dataset(random_seqs(5)), PreprocessConfig(frames=10, velocity=True))
    assert x.shape == (3, 10, 4, 6)
    torch.testing.assert_close(x[:, 1:, :, 3:], x[:, 1:, :, :3] - x[:, :-1, :, :3])
    assert (x[:, 0, :, 3:] == 0).all()


@pytest.mark.parametrize(
    ("layout", "edges", "cfg", "pattern"),
    [
        ("hand", None, PreprocessConfig(center="pair"), "needs a two_person layout"),
        ("two_person", None, PreprocessConfig(center="wrist"), "needs one skeleton"),
        ("generic", None, PreprocessConfig(scale="bone"), "needs edges"),
    ],
)
def test_impossible_choices_are_refused(layout: str, edges, cfg: PreprocessConfig, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        preprocess(dataset(random_seqs(0), layout, edges), cfg)


@pytest.mark.parametrize(
    "kwargs",
    [{"frames": 0}, {"frames": 2.5}, {"center": "torso"}, {"scale": "mm"}],
)
def test_preprocess_config_validation(kwargs) -> None:
    with pytest.raises(ValueError, match="PreprocessConfig"):
        PreprocessConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"rotate": -1.0}, {"scale": 1.0}, {"noise": -0.1}, {"time_warp": 1.0}, {"axis": 3}],
)
def test_augment_config_validation(kwargs) -> None:
    with pytest.raises(ValueError, match="AugmentConfig"):
        AugmentConfig(**kwargs)


# ------------------------------------------------------------------ augmentation

ALL = AugmentConfig(rotate=30.0, scale=0.2, noise=0.05, time_warp=0.3)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@FAST
@given(b=st.integers(1, 5), t=st.integers(1, 9), v=st.integers(1, 5), c=st.sampled_from([2, 3, 6]),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_all_zero_augmentation_is_identity(b: int, t: int, v: int, c: int, seed: int) -> None:
    x = torch.randn(b, t, v, c, generator=gen(seed))
    torch.testing.assert_close(augment(x, AugmentConfig(), gen(0)), x, rtol=0, atol=0)


@FAST
@given(seed=st.integers(0, 2**16), t=st.integers(1, 12), c=st.sampled_from([3, 6]))
def test_same_generator_seed_same_augmentation(seed: int, t: int, c: int) -> None:
    x = torch.randn(4, t, 5, c, generator=gen(123))
    a, b = augment(x, ALL, gen(seed)), augment(x, ALL, gen(seed))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, augment(x, ALL, gen(seed + 1)))


@FAST
@given(seed=st.integers(0, 2**16), deg=st.floats(1.0, 180.0))
def test_rotation_turns_about_the_vertical_axis_only(seed: int, deg: float) -> None:
    x = torch.randn(6, 4, 5, 6, dtype=torch.float64, generator=gen(seed))  # positions + velocities
    y = augment(x, AugmentConfig(rotate=deg), gen(seed))
    xs, ys = x.unflatten(-1, (2, 3)), y.unflatten(-1, (2, 3))
    torch.testing.assert_close(ys[..., 1], xs[..., 1])  # the vertical coordinate is untouched
    torch.testing.assert_close(ys.norm(dim=-1), xs.norm(dim=-1))  # lengths are kept
    # one angle per sample, within the limit: the (z, x) plane turns by the same angle everywhere
    turn = torch.atan2(ys[..., 0], ys[..., 2]) - torch.atan2(xs[..., 0], xs[..., 2])
    turn = torch.remainder(turn + math.pi, 2 * math.pi) - math.pi
    assert (turn.abs() <= math.radians(deg) + 1e-9).all()
    torch.testing.assert_close(turn, turn[:, :1, :1, :1].expand_as(turn))


def test_scale_factor_is_per_sample_and_bounded() -> None:
    x = torch.rand(50, 3, 4, 3, dtype=torch.float64) + 0.5
    ratio = augment(x, AugmentConfig(scale=0.2), gen(0)) / x
    per_sample = ratio.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample.min() >= 0.8 - 1e-12 and per_sample.max() <= 1.2 + 1e-12
    assert per_sample.std() > 0.05


def test_noise_has_the_configured_std() -> None:
    x = torch.zeros(64, 16, 10, 3)
    assert augment(x, AugmentConfig(noise=0.1), gen(0)).std().item() == pytest.approx(0.1, rel=0.05)


@FAST
@given(seed=st.integers(0, 2**16), t=st.integers(2, 40), warp=st.floats(0.01, 0.99))
def test_time_warp_reads_a_monotone_window_of_the_sequence(seed: int, t: int, warp: float) -> None:
    """On a clock signal x_t = t the output stays inside the sequence, in order, at least
    (1 - warp) of it long."""
    x = torch.arange(t, dtype=torch.float64).view(1, t, 1, 1).expand(8, t, 2, 3).contiguous()
    y = augment(x, AugmentConfig(time_warp=warp), gen(seed))[..., 0, 0]
    assert (y.diff(dim=1) >= -1e-9).all() and y.min() >= 0 and y.max() <= t - 1
    assert ((y[:, -1] - y[:, 0]) >= (1 - warp) * (t - 1) - 1e-9).all()


def test_rotation_needs_xyz_groups() -> None:
    with pytest.raises(ValueError, match="groups of 3"):
        augment(torch.zeros(2, 3, 4, 2), AugmentConfig(rotate=10), gen(0))
