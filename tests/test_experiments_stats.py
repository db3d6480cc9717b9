"""Confidence intervals checked against hand-computed values."""

import math

import pytest

from pmp.experiments.stats import mean_ci


def test_t_interval_by_hand() -> None:
    # values 1, 2, 3: mean 2, sample std 1, t(0.975, 2) = 4.302653, half-width 4.302653 / sqrt(3)
    ci = mean_ci([1.0, 2.0, 3.0])
    assert (ci.mean, ci.std, ci.n) == (2.0, 1.0, 3)
    assert ci.hi - ci.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert ci.mean - ci.lo == pytest.approx(ci.hi - ci.mean)


def test_single_value_has_no_spread_and_bad_input_is_an_error() -> None:
    assert mean_ci([0.5]).to_dict() == {"mean": 0.5, "std": 0.0, "n": 1, "lo": 0.5, "hi": 0.5, "level": 0.95}
    for bad in ([], [float("nan")], [[1.0]]):
        with pytest.raises(ValueError, match="mean_ci"):
            mean_ci(bad)
