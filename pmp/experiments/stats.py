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
