from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from edgetier.bench import poisson_arrivals
from edgetier.errors import ConfigError


def test_same_seed_same_schedule_and_other_seed_differs() -> None:
    a = poisson_arrivals(50, 10, seed=7)
    assert np.array_equal(a, poisson_arrivals(50, 10, seed=7))
    assert not np.array_equal(a, poisson_arrivals(50, 10, seed=8))


def test_times_ascending_inside_window() -> None:
    t = poisson_arrivals(200, 5, seed=1)
    assert np.all(np.diff(t) > 0)
    assert t[0] >= 0 and t[-1] < 5


@pytest.mark.parametrize("rate", [5.0, 120.0, 3000.0])
def test_mean_rate_and_exponential_gaps(rate: float) -> None:
    duration = 20_000 / rate  # about 20 000 arrivals
    t = poisson_arrivals(rate, duration, seed=3)
    n = t.size
    # Poisson count: mean rate*duration, sd sqrt of it; 5 sd bounds.
    expected = rate * duration
    assert abs(n - expected) < 5 * np.sqrt(expected)
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)
    # Exponential: coefficient of variation 1, and a KS test against expon(1/rate).
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 1e-3


def test_not_uniform_gaps() -> None:
    gaps = np.diff(poisson_arrivals(100, 50, seed=0))
    assert stats.kstest(gaps, "uniform", args=(0, 2 / 100)).pvalue < 1e-6


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (-1, 1), (10, 0)])
def test_bad_arguments(rate: float, duration: float) -> None:
    with pytest.raises(ConfigError):
        poisson_arrivals(rate, duration)
