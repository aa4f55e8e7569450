from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from edgetier.bench import SpreadWarning, latency_summary, merge_repeats, spread_pct
from edgetier.errors import ConfigError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ns = rng.exponential(2e6, size=int(rng.integers(10, 5000))).astype(np.int64)
    got = latency_summary(ns)
    ms = ns / 1e6
    for q, value in [(50, got.p50), (90, got.p90), (95, got.p95), (99, got.p99)]:
        assert value == pytest.approx(np.percentile(ms, q))
    assert got.mean == pytest.approx(ms.mean())
    assert got.max == pytest.approx(ms.max())
    assert got.p50 <= got.p90 <= got.p95 <= got.p99 <= got.max


def test_percentiles_of_known_sequence() -> None:
    got = latency_summary(np.arange(1, 101) * 1_000_000)  # 1..100 ms
    assert got.p50 == pytest.approx(50.5)
    assert got.max == 100.0


def test_empty_latencies_rejected() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        latency_summary([])


def test_spread_pct() -> None:
    assert spread_pct([100.0]) == 0.0
    assert spread_pct([90.0, 100.0, 110.0]) == pytest.approx(20.0)


def test_merge_repeats_takes_medians_and_warns_on_spread(make_result: Any) -> None:
    reps = [make_result(t, seed=i) for i, t in enumerate([100.0, 120.0, 80.0])]
    with pytest.warns(SpreadWarning, match="40.0 %"):
        merged = merge_repeats(reps, label="x")
    assert merged.throughput_per_s == 100.0
    assert merged.repeats == 3
    assert merged.spread_pct == pytest.approx(40.0)
    assert merged.latency_ms.p99 == pytest.approx(
        float(np.median([r.latency_ms.p99 for r in reps]))
    )
    assert merged.requests == 1500


def test_merge_repeats_quiet_under_ten_percent(make_result: Any) -> None:
    reps = [make_result(t, seed=i) for i, t in enumerate([100.0, 104.0, 97.0])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged = merge_repeats(reps)
    assert merged.spread_pct == pytest.approx(7.0)


def test_merge_repeats_keeps_each_round_in_order(make_result: Any) -> None:
    reps = [make_result(t, seed=i) for i, t in enumerate([100.0, 104.0, 97.0])]
    merged = merge_repeats(reps)
    assert merged.round_throughput_per_s == [100.0, 104.0, 97.0]
    assert merged.round_p50_ms == [r.latency_ms.p50 for r in reps]
    assert merge_repeats(reps[:1]).round_throughput_per_s is None
