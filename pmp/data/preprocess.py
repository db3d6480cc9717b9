"""Turning variable-length sequences into one fixed-size tensor, and training-time augmentation.

`preprocess` is deterministic and runs once per dataset: centre, normalise scale (both from the
sequence's own frames), resample in time to a fixed length, compute the input features
(features.py), optionally average temporal chunks. `augment` runs on every training batch, on
those features, and draws everything from the caller's generator.
See docs/data.md for why each choice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import DataFormatError, SkeletonDataset, mirror_permutation
from .features import ChannelGroup, InputLayout, check_features, chunk_means, compute_features, input_layout

CENTERS = ("auto", "wrist", "pair", "sequence", "none")
SCALES = ("auto", "bone", "std", "none")
AUTO_CENTER = {"hand": "wrist", "two_person": "pair", "generic": "sequence"}
_TINY = 1e-8  # below this a sequence has no size to normalise (e.g. all joints at one point)


@dataclass
class PreprocessConfig:
    """How raw sequences become the (N, frames, V, C') model input.

    center: "auto" picks by layout (hand -> "wrist", two_person -> "pair", generic -> "sequence").
    scale: "auto" -> "bone" (mean bone length) when the dataset has edges, else "std".
    features: what each joint's signal holds, in order (features.FEATURES: position, distance,
    distance_within, distance_cross, bone, angle, motion); `motion` adds one displacement per entry
    of motion_steps (frames apart). chunks: if > 0, the `frames` resampled frames are averaged into
    this many temporal chunks. velocity: deprecated alias of appending "motion" (old run folders).
    """

    frames: int = 32
    center: str = "auto"
    scale: str = "auto"
    features: list[str] = field(default_factory=lambda: ["position"])
    motion_steps: list[int] = field(default_factory=lambda: [1])
    chunks: int = 0
    velocity: bool = False

    def __post_init__(self) -> None:
        if self.velocity:
            self.features = [*self.features, "motion"] if "motion" not in self.features else list(self.features)
            self.velocity = False
        check_features(list(self.features), list(self.motion_steps))
        if int(self.chunks) != self.chunks or not 0 <= self.chunks <= self.frames:
            raise ValueError(f"PreprocessConfig.chunks must be an integer in [0, frames], got {self.chunks!r}")
        if int(self.frames) != self.frames or self.frames < 1:
            raise ValueError(f"PreprocessConfig.frames must be an integer >= 1, got {self.frames!r}")
        if self.center not in CENTERS:
            raise ValueError(f"PreprocessConfig.center must be one of {CENTERS}, got {self.center!r}")
        if self.scale not in SCALES:
            raise ValueError(f"PreprocessConfig.scale must be one of {SCALES}, got {self.scale!r}")


@dataclass
class AugmentConfig:
    """Random training-time transforms, one draw per sample; all zero means identity.

    rotate: max degrees about the vertical axis `axis` (y, index 1, for SBU, FPHA and synthetic).
    scale: factor drawn in [1 - scale, 1 + scale]. noise: gaussian std in preprocessed units
    (about one mean bone length). time_warp: crop up to this fraction of the sequence at a random
    place and stretch the rest back to the full length (speed and offset changes). swap:
    probability of exchanging the two persons' joint slots (multi-person layouts; no effect on one).
    flip: probability of training on the mirror image (`mirror`: coordinate `flip_axis` negated,
    left and right joints exchanged); its features are preprocessed once, beside the original's.
    """

    rotate: float = 0.0
    scale: float = 0.0
    noise: float = 0.0
    time_warp: float = 0.0
    swap: float = 0.0
    flip: float = 0.0
    axis: int = 1
    flip_axis: int = 0

    def __post_init__(self) -> None:
        for name, hi in (("rotate", math.inf), ("scale", 1.0), ("noise", math.inf), ("time_warp", 1.0),
                         ("swap", 1.0 + 1e-12), ("flip", 1.0 + 1e-12)):
            value = getattr(self, name)
            if not 0.0 <= value < hi:
                raise ValueError(f"AugmentConfig.{name} must be in [0, {hi}), got {value!r}")
        for name in ("axis", "flip_axis"):
            if getattr(self, name) not in (0, 1, 2):
                raise ValueError(f"AugmentConfig.{name} must be 0, 1 or 2, got {getattr(self, name)!r}")

    @property
    def is_identity(self) -> bool:
        return not (self.rotate or self.scale or self.noise or self.time_warp or self.swap or self.flip)


def mirror(ds: SkeletonDataset, axis: int = 0) -> SkeletonDataset:
    """The mirror image of every sequence: coordinate `axis` negated and each of the dataset's
    `flip_pairs` exchanged in every person, so that a left arm is again called a left arm."""
    if ds.flip_pairs is None:
        raise DataFormatError(f"{ds.name}: the flip augmentation needs the dataset's flip_pairs (its left/right "
                              "joints, [] if mirroring renames none); this dataset declares none (docs/data.md)")
    if not 0 <= axis < ds.num_channels:
        raise ValueError(f"{ds.name}: flip axis {axis} is not one of its {ds.num_channels} coordinates")
    order = mirror_permutation(ds.flip_pairs, ds.num_nodes // ds.persons, ds.persons)
    sign = np.ones(ds.num_channels)
    sign[axis] = -1.0
    return dataclasses.replace(ds, sequences=[s[:, order] * sign for s in ds.sequences])


def layout_of(ds: SkeletonDataset, cfg: PreprocessConfig) -> InputLayout:
    """The channel groups of `preprocess(ds, cfg)` (what augmentation needs), computed from sizes only."""
    return input_layout(list(cfg.features), ds.num_nodes, ds.num_channels, ds.persons, list(cfg.motion_steps))


def preprocess(ds: SkeletonDataset, cfg: PreprocessConfig) -> torch.Tensor:
    """All sequences of `ds` as one float32 tensor (N, T', V, C'): T' = cfg.chunks or cfg.frames,
    C' = layout_of(ds, cfg).channels.

    Works on all frames concatenated (per-sequence statistics by segment sums), not sequence by
    sequence: a few large tensor operations instead of thousands of small ones."""
    center = AUTO_CENTER[ds.layout] if cfg.center == "auto" else cfg.center
    scale = ("bone" if ds.edges else "std") if cfg.scale == "auto" else cfg.scale
    if center == "pair" and ds.layout != "two_person":
        raise ValueError(f"center='pair' needs a two_person layout; {ds.name} is {ds.layout!r}")
    if center == "wrist" and ds.layout == "two_person":
        raise ValueError(f"center='wrist' needs one skeleton; {ds.name} is two_person (use 'pair')")
    if scale == "bone" and not ds.edges:
        raise ValueError(f"scale='bone' needs edges; {ds.name} has none (use 'std')")
    frames = _Frames(ds)
    x = _center(frames, center, ds.root_joint) / _size(frames, scale, ds.edges or [])[frames.seg, None, None]
    x = resample(x, cfg.frames, frames.start, frames.length)
    k = ds.persons
    roots = [ds.root_joint + p * (ds.num_nodes // k) for p in range(k)]
    x = compute_features(x, list(cfg.features), k, ds.edges, roots, list(cfg.motion_steps))
    if cfg.chunks:
        x = chunk_means(x, cfg.chunks)
    return x.float()


class _Frames:
    """All frames of a dataset in one (sum T_i, V, C) float64 tensor, with each frame's sequence."""

    def __init__(self, ds: SkeletonDataset):
        self.x = torch.from_numpy(np.concatenate(ds.sequences).astype(np.float64, copy=False))
        self.length = torch.from_numpy(ds.lengths)
        self.start = torch.cumsum(self.length, 0) - self.length
        self.seg = torch.repeat_interleave(torch.arange(len(self.length)), self.length)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sequence mean over frames of per-frame `values` (sum T_i, ...) -> (N, ...)."""
        total = torch.zeros((len(self.length),) + values.shape[1:], dtype=values.dtype)
        total.index_add_(0, self.seg, values)
        return total / self.length.view(-1, *[1] * (values.dim() - 1))


def _center(f: _Frames, mode: str, root: int) -> torch.Tensor:
    """Remove the translation that carries no class information (where the subject stands)."""
    x, first = f.x, f.x[f.start]
    if mode == "wrist":  # hand shape relative to the wrist; the wrist's own motion from its start
        out = x - x[:, root : root + 1]
        out[:, root] = x[:, root] - first[f.seg, root]
        return out
    if mode == "pair":  # both bodies relative to the first-frame midpoint of their root joints
        mid = (first[:, root] + first[:, x.shape[1] // 2 + root]) / 2
        return x - mid[f.seg, None]
    if mode == "sequence":
        return x - f.mean(x.mean(dim=1))[f.seg, None]
    return x


def _size(f: _Frames, mode: str, edges: list[tuple[int, int]]) -> torch.Tensor:
    """Each sequence's own size (N,), so that units (mm, [0, 1]) and subject size do not matter."""
    x = f.x
    if mode == "bone":
        a, b = torch.tensor(edges).T
        s = f.mean((x[:, a] - x[:, b]).norm(dim=-1).mean(dim=1))
    elif mode == "std":  # RMS distance of the joints from their per-frame centroid
        s = f.mean((x - x.mean(dim=1, keepdim=True)).pow(2).sum(-1).mean(dim=1)).sqrt()
    else:
        s = torch.ones(len(f.length), dtype=x.dtype)
    return torch.where(s > _TINY, s, 1.0)


def resample(x: torch.Tensor, frames: int, start: torch.Tensor | None = None,
             length: torch.Tensor | None = None) -> torch.Tensor:
    """Sequences concatenated along time (sum T_i, V, C), sequence i at frames [start_i, start_i +
    length_i), each to `frames` frames by linear interpolation -> (N, frames, V, C); without
    start/length, x is one sequence (T, V, C) -> (frames, V, C). First and last frames are kept
    (frames >= 2); any T_i >= 1, shorter or longer than `frames`."""
    if start is None or length is None:
        return resample(x, frames, torch.tensor([0]), torch.tensor([len(x)]))[0]
    grid = torch.linspace(0, 1, frames, dtype=torch.float64)
    return _lerp(x, start[:, None] + (length - 1)[:, None] * grid, (start + length - 1)[:, None])


def _lerp(x: torch.Tensor, pos: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Frames of x (T, V, C) at fractional indices pos (..., F), each row never reading past its
    `last` frame (broadcast to pos) -> (..., F, V, C)."""
    i0 = torch.minimum(pos.floor().long(), last)
    i1 = torch.minimum(i0 + 1, last)
    w = (pos - i0).to(x.dtype)[..., None, None]
    return x[i0] * (1 - w) + x[i1] * w


def swap_persons(x: torch.Tensor) -> torch.Tensor:
    """A two-person batch (B, T, V, C') with the persons exchanged: the joints are stored person by
    person and every feature is computed own person first (features.py), so the swap is a roll of
    the joint axis by half, exact for every channel."""
    v = x.shape[2]
    if v % 2:
        raise ValueError(f"swap_persons needs two persons of equal size, got {v} joints")
    return torch.cat([x[:, :, v // 2 :], x[:, :, : v // 2]], dim=2)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
            layout: InputLayout | None = None, mirrored: torch.Tensor | None = None) -> torch.Tensor:
    """Randomly transform a batch (B, T, V, C'); the same generator state gives the same output.

    `layout` (layout_of) says what the channels are: rotation turns every vector group alike (so
    motion and bones stay those of the rotated positions), scaling multiplies vectors and lengths,
    swap exchanges the persons. Without it every group of 3 channels is taken as a vector.
    `mirrored` is the same batch preprocessed from `mirror(ds)`, which cfg.flip picks from (first,
    so that every other transform applies to the mirror image too)."""
    if cfg.is_identity:
        return x
    b, t, v, c = x.shape

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1), drawn on the generator's device
        u = torch.rand(*shape, generator=generator, device=generator.device, dtype=x.dtype)
        return (2 * u - 1).to(x.device)

    if cfg.flip:
        if mirrored is None or mirrored.shape != x.shape:
            raise ValueError(f"augment.flip needs the mirrored batch of the same shape {tuple(x.shape)}, got "
                             f"{None if mirrored is None else tuple(mirrored.shape)}")
        x = torch.where((uniform(b) + 1 < 2 * cfg.flip).view(b, 1, 1, 1), mirrored, x)
    if layout is None:
        if cfg.rotate and c % 3:
            raise ValueError(f"rotation needs channels in groups of 3 (x, y, z), got C={c}")
        layout = InputLayout(tuple(ChannelGroup("position", i, 3, "vector") for i in range(0, c - c % 3, 3)))
    if cfg.time_warp and t > 1:
        u = (uniform(b, 2) + 1) / 2
        span = (t - 1) * (1 - cfg.time_warp * u[:, 0])
        start = u[:, 1] * ((t - 1) - span)
        grid = torch.linspace(0, 1, t, device=x.device, dtype=x.dtype)
        offset = torch.arange(b, device=x.device)[:, None] * t  # the batch as one run of b * t frames
        pos = offset + start[:, None] + span[:, None] * grid
        x = _lerp(x.reshape(b * t, v, c), pos, offset + t - 1)
    if cfg.rotate and (vec := layout.indices("vector")):
        if any(g.size != 3 for g in layout.vector_groups()):
            raise ValueError(f"rotation needs 3-D vectors (x, y, z), got channel groups {layout.vector_groups()}")
        angle = uniform(b) * math.radians(cfg.rotate)
        i, j = (cfg.axis + 1) % 3, (cfg.axis + 2) % 3  # the plane the rotation turns
        rot = torch.eye(3, dtype=x.dtype, device=x.device).repeat(b, 1, 1)
        rot[:, i, i] = rot[:, j, j] = angle.cos()
        rot[:, i, j], rot[:, j, i] = -angle.sin(), angle.sin()
        x = x.clone()
        x[..., vec] = torch.einsum("btvgk,bjk->btvgj", x[..., vec].reshape(b, t, v, -1, 3), rot).reshape(b, t, v, -1)
    if cfg.scale:
        factor = (1 + cfg.scale * uniform(b)).view(b, 1, 1, 1)
        sized = layout.indices("vector", "length")
        x = x * factor if len(sized) == c else x.index_copy(-1, torch.tensor(sized), x[..., sized] * factor)
    if cfg.noise:
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        x = x + cfg.noise * noise.to(x.device)
    if cfg.swap and layout.persons == 2:
        x = torch.where((uniform(b) + 1 < 2 * cfg.swap).view(b, 1, 1, 1), swap_persons(x), x)
    return x
