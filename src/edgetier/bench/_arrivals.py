"""Open-loop arrival schedules: Poisson arrivals from a seeded generator.

Latency in an open loop is measured from each request's *scheduled* send time, so a
client or server that falls behind shows up as latency instead of silently sending less
(the coordinated-omission trap of closed-loop tools).
"""

from __future__ import annotations

import numpy as np

from edgetier.errors import ConfigError

__all__ = ["poisson_arrivals"]


def poisson_arrivals(rate_per_s: float, duration_s: float, *, seed: int = 0) -> np.ndarray:
    """Send times in seconds from 0, ascending, below ``duration_s``, for a Poisson process.

    Inter-arrival gaps are exponential with mean ``1 / rate_per_s``; the same seed gives
    the same schedule, so runs and systems are driven identically.
    """
    if rate_per_s <= 0:
        raise ConfigError(f"rate must be > 0 requests/s, got {rate_per_s}")
    if duration_s <= 0:
        raise ConfigError(f"duration_s must be > 0, got {duration_s}")
    rng = np.random.default_rng(seed)
    expected = rate_per_s * duration_s
    # Draw enough gaps in one go (mean + 6 sigma + slack), extend in the rare short case.
    n = int(expected + 6 * np.sqrt(expected) + 16)
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, size=n))
    while times[-1] < duration_s:
        more = np.cumsum(rng.exponential(1.0 / rate_per_s, size=n)) + times[-1]
        times = np.concatenate([times, more])
    return times[times < duration_s]
