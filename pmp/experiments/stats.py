"""Summary statistics for runs repeated over seeds and folds: what a reader needs to tell a
difference from noise (SBU's folds move by several points between seeds)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    """Mean, sample std and a t-interval of the mean over n values (interval = the mean when n < 2)."""

    mean: float
    std: float
    n: int
    lo: float
    hi: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mean_ci(values: list[float] | np.ndarray, level: float = 0.95) -> MeanCI:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"mean_ci needs a non-empty list of finite numbers, got {values!r}")
    m = float(v.mean())
    if v.size < 2:
        return MeanCI(m, 0.0, 1, m, m, level)
    s = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, v.size - 1)) * s / math.sqrt(v.size)
    return MeanCI(m, s, int(v.size), m - half, m + half, level)


@dataclass(frozen=True)
class PairedDiff(MeanCI):
    """a - b over n pairs: the mean difference with its sample std and t-interval (lo, hi) as in
    MeanCI, a percentile-bootstrap interval, and how many pairs a wins, ties and loses. Unlike
    MeanCI, n < 2 gives no interval (NaN bounds): one pair says nothing about the spread, so it must
    not look certain."""

    boot_lo: float = math.nan
    boot_hi: float = math.nan
    wins: int = 0
    ties: int = 0
    losses: int = 0


#: resamples of the bootstrap; its generator is seeded, so a report is the same every time it is made
BOOTSTRAP_RESAMPLES = 10_000


def paired_diff(
    a: list[float] | np.ndarray, b: list[float] | np.ndarray, level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> PairedDiff:
    """Statistics of a[i] - b[i]; a pair is a tie when the two are exactly equal (same test-set count)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_diff needs two non-empty lists of equal length, got {a.shape} and {b.shape}")
    d = a - b
    ci = mean_ci(d, level)
    t = boot = (math.nan, math.nan)
    if d.size > 1:
        idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
        means = d[idx].mean(axis=1)
        tail = 100 * (1 - level) / 2
        boot = (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))
        t = (ci.lo, ci.hi)
    wins, ties = int((d > 0).sum()), int((d == 0).sum())
    return PairedDiff(ci.mean, ci.std, ci.n, *t, level, *boot, wins, ties, int(d.size) - wins - ties)
